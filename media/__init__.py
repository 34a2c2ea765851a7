"""Media: RTP/RTCP relay, rtpengine client, media-server endpoint."""
