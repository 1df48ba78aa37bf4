"""Ticket numbers typed by people or sent to the API: only ASCII digits count (found by make fuzz: "²" passed
str.isdigit() and made int() raise, a 500 on GET/PATCH /api/tickets/{number})."""

from crm_store.repositories.tickets import normalise_ticket_number


def test_superscript_and_other_unicode_digits_are_no_ticket_number():
    assert normalise_ticket_number("\u00b2") is None
    assert normalise_ticket_number("T-\u00b2\u00b3") is None
    assert normalise_ticket_number("t-12\u00b2") == "T-000012"
    assert normalise_ticket_number("T000123") == "T-000123"
