"""Media server: the pieces of a media endpoint (prompts, recording, mixing, DTMF, IVR)."""
