"""Error texts returned by the API (tests assert them)."""

NOT_AUTHENTICATED = "Not authenticated"
BAD_CREDENTIALS = "Incorrect username or password"
INVALID_TOKEN = "Invalid or expired token"
FORBIDDEN = "Your role does not allow this"
CUSTOMER_NOT_FOUND = "Customer not found"
DEVICE_NOT_FOUND = "Device not found"
TICKET_NOT_FOUND = "Ticket not found"
