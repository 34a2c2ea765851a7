"""Operations: health, metrics, REST API, webhooks."""
