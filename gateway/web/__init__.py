"""The gateway's HTTP side: webhooks, status page, /api/*, /metrics, /healthz."""
