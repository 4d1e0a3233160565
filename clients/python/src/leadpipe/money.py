"""leadpipe.v1.Money to and from `decimal.Decimal`.

Money is `units` (int64) plus `nanos` (10^-9 units) with the same sign, as google.type.Money.
Floats are refused: 0.1 has no exact binary value, and an amount must round-trip exactly.
"""

from decimal import Decimal, InvalidOperation

from leadpipe.v1 import lead_pb2

_NANOS_PER_UNIT = 1_000_000_000
_INT64_MAX = 2**63 - 1


def money(currency_code: str, amount: "Decimal | str | int") -> lead_pb2.Money:
    """A Money of `amount` in `currency_code`, for example `money("EUR", "1999.99")`.

    Raises ValueError for an amount with more than nine decimal places or beyond int64 units,
    and TypeError for a float.
    """
    if isinstance(amount, float):
        raise TypeError("pass a Decimal, str or int, not a float: floats are not exact")
    try:
        value = Decimal(amount)
    except InvalidOperation as error:
        raise ValueError(f"{amount!r} is not a decimal number") from error
    if not value.is_finite():
        raise ValueError(f"{amount!r} is not a finite amount")
    nanos_total = value * _NANOS_PER_UNIT
    if nanos_total != nanos_total.to_integral_value():
        raise ValueError(f"{amount!r} has more than nine decimal places")
    nanos_total = int(nanos_total)
    sign = -1 if nanos_total < 0 else 1
    units, nanos = divmod(abs(nanos_total), _NANOS_PER_UNIT)
    if units > _INT64_MAX:
        raise ValueError(f"{amount!r} is beyond the int64 range of Money.units")
    return lead_pb2.Money(currency_code=currency_code, units=sign * units, nanos=sign * nanos)


def to_decimal(value: lead_pb2.Money) -> Decimal:
    """The exact amount of a Money, in its currency's major units (its currency is not kept)."""
    total = value.units * _NANOS_PER_UNIT + value.nanos
    units, nanos = divmod(abs(total), _NANOS_PER_UNIT)
    fraction = f"{nanos:09d}".rstrip("0")
    return Decimal(f"{'-' if total < 0 else ''}{units}{'.' + fraction if fraction else ''}")
