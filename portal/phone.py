"""Phone numbers: what a guest types becomes E.164, or a clear reason why it cannot."""

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

from .catalog import N_

MAX_INPUT_LENGTH = 40

# Types a guest can place a call from; fixed lines are allowed because many
# plans cannot tell, and the provider only needs caller ID.
CALLABLE_TYPES = {
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.UNKNOWN,
}


class InvalidPhone(ValueError):
    """The input is not a phone number a guest could call from.

    str() is the guest-facing reason (an N_-marked msgid); `params` fill its placeholders."""

    def __init__(self, reason, **params):
        super().__init__(reason)
        self.params = params


def example(region):
    """A mobile number of region as a guest would type it, for the placeholder and the hints
    ("+380 50 123 4567" for UA); a Russian one for a region without an example."""
    number = (phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
              or phonenumbers.example_number_for_type("RU", PhoneNumberType.MOBILE))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def normalise(text, region):
    """Parse what a guest typed into E.164 ("+79161234567"), using region for national numbers."""
    text = (text or "").strip()
    if not text:
        raise InvalidPhone(N_("Enter your phone number."))
    if len(text) > MAX_INPUT_LENGTH or any(ch not in "+0123456789 ()-." for ch in text):
        raise InvalidPhone(N_("Type the number with digits; spaces, dashes, brackets and a + "
                              "are fine, for example %(example)s."), example=example(region))
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        raise InvalidPhone(N_("This does not look like a phone number.")) from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone(N_("This is not a valid phone number. Check the country code and "
                              "the digits."))
    if phonenumbers.number_type(number) not in CALLABLE_TYPES:
        raise InvalidPhone(N_("Use the number of the phone you will call from."))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def digits_of(text):
    """Only the digits of a phone number, whatever its formatting ("+7 (916) …" -> "7916…")."""
    return "".join(ch for ch in str(text or "") if ch in "0123456789")  # not "²" or "٣"


def from_provider(digits):
    """E.164 from a number as the provider writes it ("79161234567", "+7 916 …"), or None."""
    only_digits = digits_of(digits)
    if not 8 <= len(only_digits) <= 15:
        return None
    return "+" + only_digits


def for_dialling(e164):
    """The number grouped for dialling by hand: "+7 916 123-45-67"."""
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
