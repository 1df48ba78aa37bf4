"""The web service: CRM REST API, the customer web chat page and the agent console."""
