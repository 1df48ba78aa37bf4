"""Domain errors raised by repository functions."""


class CrmError(Exception):
    """Base class of CRM domain errors."""


class NotFoundError(CrmError):
    """The requested record does not exist (or is not visible to the caller)."""


class InvalidTransitionError(CrmError):
    """A ticket status change that the workflow does not allow."""


class ConflictError(CrmError):
    """A uniqueness rule was violated (e.g. a username already taken)."""
