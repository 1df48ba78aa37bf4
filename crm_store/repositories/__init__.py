"""Repository functions: the only way actions, the API and device hooks touch CRM data.

Functions are ``verb_noun(session, *, ...)``; they flush but never commit: the caller owns the unit of work.
"""
