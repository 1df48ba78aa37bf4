"""The web service: CRM REST API, the customer web chat page (and later the agent console)."""
