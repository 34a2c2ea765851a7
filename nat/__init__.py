"""NAT traversal: detection, Contact fixing, keep-alives, STUN."""
