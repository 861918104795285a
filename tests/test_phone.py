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


@pytest.mark.parametrize("region, shown", [("RU", "+7 912 345-67-89"), ("UA", "+380 50 123 4567"),
                                           ("KZ", "+7 771 000 9998")])
def test_the_example_is_the_regions_and_is_itself_accepted(region, shown):
    assert phone.example(region) == shown
    phone.normalise(shown, region)  # the hint never contradicts the check


def test_reasons_say_what_is_wrong():
    with pytest.raises(phone.InvalidPhone) as caught:
        phone.normalise("123", "RU")
    assert str(caught.value).startswith("This is not a valid phone number.")
    with pytest.raises(phone.InvalidPhone) as caught:
        phone.normalise("050 123 4567 ext", "UA")
    assert caught.value.params == {"example": "+380 50 123 4567"}
    assert (str(caught.value) % caught.value.params).endswith("for example +380 50 123 4567.")
