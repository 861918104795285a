"""Phone numbers as guests type them."""

import pytest

from portal import phone


@pytest.mark.parametrize("typed, region, e164", [
    ("+7 916 123-45-67", "RU", "+79161234567"),
    ("8 (916) 123-45-67", "RU", "+79161234567"),
    ("9161234567", "RU", "+79161234567"),
    ("+380 50 123 4567", "RU", "+380501234567"),
    ("050 123 4567", "UA", "+380501234567"),
])
def test_valid_numbers_become_e164(typed, region, e164):
    assert phone.normalise(typed, region) == e164


@pytest.mark.parametrize("typed", ["", "   ", "123", "abc", "+7 916", "+7 916 123 45 67 89 00",
                                   "+79161234567; rm -rf /", "٩١٦١٢٣٤٥٦٧", "x" * 1000,
                                   "+7 800 555-35-35",   # toll-free
                                   "+7 809 505-12-34"])  # premium rate
def test_invalid_numbers_are_refused_with_a_reason(typed):
    with pytest.raises(phone.InvalidPhone) as caught:
        phone.normalise(typed, "RU")
    assert str(caught.value)


def test_provider_numbers_and_dialling_format():
    assert phone.from_provider("7 (495) 123-45-67") == "+74951234567"
    assert phone.from_provider("") is None
    assert phone.for_dialling("+74951234567") == "+7 495 123-45-67"
