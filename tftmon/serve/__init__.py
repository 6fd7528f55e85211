"""The HTTP edge: BentoML service, request/response schemas, live windows and alerts, the live feeder."""
