//! Money, shaped like google.type.Money, restricted to non-negative amounts.

use serde::{Deserialize, Serialize};

const NANOS_PER_UNIT: i64 = 1_000_000_000;

/// An ISO 4217 currency code such as `EUR`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CurrencyCode(String);

impl CurrencyCode {
    pub fn parse(value: &str) -> Result<Self, String> {
        match iso_currency::Currency::from_code(value) {
            Some(_) => Ok(Self(value.to_owned())),
            None => Err(format!("{value:?} is not an ISO 4217 currency code")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A non-negative amount of money.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub currency: CurrencyCode,
    pub units: i64,
    pub nanos: i32,
}

impl Money {
    /// Validates the parts of a google.type.Money. Returns `(sub-field, description)` on failure.
    pub fn parse(
        currency_code: &str,
        units: i64,
        nanos: i32,
    ) -> Result<Self, (&'static str, String)> {
        if units < 0 || nanos < 0 {
            return Err(("units", "must not be negative".into()));
        }
        if nanos >= NANOS_PER_UNIT as i32 {
            return Err(("nanos", "must be between 0 and 999,999,999".into()));
        }
        let currency = CurrencyCode::parse(currency_code).map_err(|e| ("currency_code", e))?;
        Ok(Self {
            currency,
            units,
            nanos,
        })
    }

    /// The amount in major units, for criteria and statistics (not for bookkeeping).
    pub fn value(&self) -> f64 {
        self.units as f64 + f64::from(self.nanos) / NANOS_PER_UNIT as f64
    }

    pub fn is_positive(&self) -> bool {
        self.units > 0 || self.nanos > 0
    }
}

/// An exact sum of non-negative amounts. Each amount fits in i64 units, a total may not:
/// summing in nanos in an i128 keeps any total of up to some 10^10 maximal amounts exact, so it
/// is never rounded, and never clipped where it is reported (see [`Total::parts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Total {
    /// None once the sum overflowed even an i128.
    nanos: Option<i128>,
}

impl Default for Total {
    fn default() -> Self {
        Self { nanos: Some(0) }
    }
}

impl Total {
    pub fn add(&mut self, units: i64, nanos: i32) {
        self.add_sum(units.into(), nanos.into());
    }

    /// Adds a sum of amounts: whole units, and nanos not carried into units.
    pub fn add_sum(&mut self, units: i128, nanos: i128) {
        let amount = units
            .checked_mul(i128::from(NANOS_PER_UNIT))
            .and_then(|n| n.checked_add(nanos));
        self.nanos = self
            .nanos
            .zip(amount)
            .and_then(|(sum, a)| sum.checked_add(a));
    }

    pub fn add_total(&mut self, other: Total) {
        self.nanos = self
            .nanos
            .zip(other.nanos)
            .and_then(|(a, b)| a.checked_add(b));
    }

    /// `(units, nanos)` as in google.type.Money, or None when the units do not fit an i64.
    pub fn parts(&self) -> Option<(i64, i32)> {
        let nanos = self.nanos?;
        let units = i64::try_from(nanos.div_euclid(i128::from(NANOS_PER_UNIT))).ok()?;
        let rest = nanos.rem_euclid(i128::from(NANOS_PER_UNIT)) as i32;
        Some((units, rest))
    }
}

/// A non-negative decimal such as `10000` or `99.95`, split into units and nanos for comparing
/// against stored amounts.
pub fn parse_decimal_amount(text: &str) -> Result<(i64, i32), String> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let invalid = || format!("{text:?} is not a non-negative decimal number");
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || fraction.len() > 9 {
        return Err(invalid());
    }
    let units: i64 = whole.parse().map_err(|_| invalid())?;
    let nanos = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}")
            .parse::<i32>()
            .map_err(|_| invalid())?
    };
    Ok((units, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_exact_and_refuse_what_does_not_fit() {
        let mut total = Total::default();
        assert_eq!(total.parts(), Some((0, 0)));
        total.add(i64::MAX, 999_999_999);
        assert_eq!(total.parts(), Some((i64::MAX, 999_999_999)));
        total.add(0, 1);
        assert_eq!(total.parts(), None, "one nano past the largest");

        let mut total = Total::default();
        total.add(9_007_199_254_740_993, 0); // 2^53 + 1: not a double
        total.add(0, 600_000_000);
        total.add(0, 600_000_000);
        assert_eq!(total.parts(), Some((9_007_199_254_740_994, 200_000_000)));
        let mut twice = total;
        twice.add_total(total);
        assert_eq!(twice.parts(), Some((18_014_398_509_481_988, 400_000_000)));
    }

    #[test]
    fn money_rejects_bad_parts() {
        assert!(Money::parse("EUR", 10, 0).is_ok());
        assert_eq!(Money::parse("EUR", -1, 0).unwrap_err().0, "units");
        assert_eq!(
            Money::parse("EUR", 1, 1_000_000_000).unwrap_err().0,
            "nanos"
        );
        assert_eq!(Money::parse("EURO", 1, 0).unwrap_err().0, "currency_code");
        assert_eq!(Money::parse("XYZ", 1, 0).unwrap_err().0, "currency_code");
    }

    #[test]
    fn money_value_and_sign() {
        let m = Money::parse("USD", 12, 500_000_000).unwrap();
        assert!((m.value() - 12.5).abs() < 1e-12);
        assert!(m.is_positive());
        assert!(!Money::parse("USD", 0, 0).unwrap().is_positive());
    }

    #[test]
    fn decimal_amounts_parse() {
        assert_eq!(parse_decimal_amount("10000"), Ok((10000, 0)));
        assert_eq!(parse_decimal_amount("99.95"), Ok((99, 950_000_000)));
        assert!(parse_decimal_amount("-1").is_err());
        assert!(parse_decimal_amount("1e3").is_err());
        assert!(parse_decimal_amount(".5").is_err());
        assert!(parse_decimal_amount("99999999999999999999").is_err());
    }
}
