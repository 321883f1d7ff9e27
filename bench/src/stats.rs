//! Medians, percentiles and spreads of repeated measurements.

/// Summary of a sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p95: f64,
    pub min: f64,
    pub max: f64,
}

/// The `q` quantile (0..=1) of sorted `v`, by linear interpolation.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

impl Summary {
    pub fn of(values: &[f64]) -> Summary {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        if v.is_empty() {
            return Summary {
                n: 0,
                median: f64::NAN,
                p95: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        Summary {
            n: v.len(),
            median: quantile(&v, 0.5),
            p95: quantile(&v, 0.95),
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    /// `median (min–max)` with `prec` decimals.
    pub fn range(&self, prec: usize) -> String {
        if self.n == 0 {
            return "–".into();
        }
        if self.n == 1 {
            return format!("{:.prec$}", self.median);
        }
        format!(
            "{:.prec$} ({:.prec$}–{:.prec$})",
            self.median, self.min, self.max
        )
    }

    /// `median / p95` with `prec` decimals.
    pub fn med_p95(&self, prec: usize) -> String {
        if self.n == 0 {
            return "–".into();
        }
        format!("{:.prec$} / {:.prec$}", self.median, self.p95)
    }
}

/// `a / b` as `1.23×`, or `–` when either is missing.
pub fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b != 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let s = Summary::of(&[3.0, 1.0, 2.0, 4.0, 5.0]);
        assert_eq!(s.median, 3.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 5.0);
        assert!((s.p95 - 4.8).abs() < 1e-9);
        assert_eq!(Summary::of(&[]).n, 0);
        assert_eq!(ratio(2.0, 1.0), "2.00×");
    }
}
