//! Traffic scenarios: requests per second and dependency slowdown, one value per second.
//!
//! A CSV file has the header `t,rps` (seconds from 0, requests per second), optionally a
//! third column `slowdown` (how many times slower the service's dependencies are); each
//! row holds until the next one. Built-in scenarios model the seed order-service.

use std::f64::consts::PI;

use super::SimulateError;

/// One second of traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Second {
    pub rps: f64,
    /// How many times slower than normal the service's dependencies answer (the I/O part
    /// of each request; its CPU is unchanged).
    pub slowdown: f64,
    /// How many times longer than normal each request's whole service time is, CPU
    /// included (a slower release).
    pub release: f64,
}

impl Second {
    /// `rps` at normal service times.
    pub fn at(rps: f64) -> Second {
        Second {
            rps,
            slowdown: 1.0,
            release: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub seconds: Vec<Second>,
}

/// The built-in scenarios' names.
pub const BUILTIN: [&str; 4] = [
    "diurnal",
    "flash-crowd",
    "slow-dependency",
    "release-regression",
];

/// A built-in scenario by name.
pub fn builtin(name: &str) -> Option<Scenario> {
    let seconds = match name {
        "diurnal" => diurnal(),
        "flash-crowd" => flash_crowd(),
        "slow-dependency" => slow_dependency(),
        "release-regression" => release_regression(),
        _ => return None,
    };
    Some(Scenario {
        name: name.to_string(),
        seconds,
    })
}

/// 24 h of order-service traffic: 40 rps at 04:00, 400 rps at 16:00 (a raised cosine),
/// with slow wobbles of ±10 % (three incommensurate sines, so no tuning to a period).
fn diurnal() -> Vec<Second> {
    (0..86_400)
        .map(|t| {
            let t = f64::from(t);
            let day = 0.5 - 0.5 * (2.0 * PI * (t - 4.0 * 3600.0) / 86_400.0).cos();
            let wobble = 1.0
                + 0.05 * (2.0 * PI * t / 1_130.0).sin()
                + 0.03 * (2.0 * PI * t / 377.0).sin()
                + 0.02 * (2.0 * PI * t / 97.0).sin();
            Second::at((40.0 + 360.0 * day) * wobble)
        })
        .collect()
}

/// 2 h: 150 rps; at 30 min the load climbs to 600 rps within a minute and holds for
/// 15 min, then falls back.
fn flash_crowd() -> Vec<Second> {
    (0..7_200)
        .map(|t| {
            let t = f64::from(t);
            let (rise, fall) = (1_800.0, 2_700.0);
            let crowd = if t < rise {
                0.0
            } else if t < rise + 60.0 {
                (t - rise) / 60.0
            } else if t < fall {
                1.0
            } else {
                0.0
            };
            Second::at(150.0 + 450.0 * crowd)
        })
        .collect()
}

/// 2 h at 200 rps; from 30 to 60 min a dependency answers 3 times slower, so each
/// request holds its worker twice as long while its CPU use is unchanged.
fn slow_dependency() -> Vec<Second> {
    (0..7_200)
        .map(|t| Second {
            slowdown: if (1_800..3_600).contains(&t) {
                3.0
            } else {
                1.0
            },
            ..Second::at(200.0)
        })
        .collect()
}

/// The diurnal day with every request's service time 1.5× from noon on, as after a
/// release that is slower than the one before it (CPU included).
fn release_regression() -> Vec<Second> {
    diurnal()
        .into_iter()
        .enumerate()
        .map(|(t, s)| Second {
            release: if t >= 12 * 3_600 { 1.5 } else { 1.0 },
            ..s
        })
        .collect()
}

/// Parses a `t,rps[,slowdown]` CSV into per-second values.
pub fn parse_csv(name: &str, text: &str) -> Result<Scenario, SimulateError> {
    let bad = |line: usize, detail: String| SimulateError::Scenario {
        name: name.to_string(),
        line,
        detail,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| bad(1, "empty file, want a header t,rps".into()))?;
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    if cols.len() < 2
        || cols[0] != "t"
        || cols[1] != "rps"
        || cols.get(2).is_some_and(|c| *c != "slowdown")
        || cols.len() > 3
    {
        return Err(bad(
            1,
            format!("header {header:?}, want t,rps or t,rps,slowdown"),
        ));
    }
    let mut rows: Vec<(u64, Second)> = Vec::new();
    for (i, line) in lines {
        let n = i + 1;
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != cols.len() {
            return Err(bad(
                n,
                format!("{} fields, want {}", fields.len(), cols.len()),
            ));
        }
        let num = |s: &str, what: &str| -> Result<f64, SimulateError> {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| bad(n, format!("{what} {s:?} is not a non-negative number")))
        };
        let t = num(fields[0], "t")?;
        if t.fract() != 0.0 || t > 31.0 * 86_400.0 {
            return Err(bad(
                n,
                format!("t {t} must be whole seconds, at most 31 days"),
            ));
        }
        let rps = num(fields[1], "rps")?;
        let slowdown = match fields.get(2) {
            Some(s) => num(s, "slowdown")?,
            None => 1.0,
        };
        if slowdown <= 0.0 {
            return Err(bad(n, "slowdown must be above zero".into()));
        }
        let t = t as u64;
        if rows.last().is_some_and(|(prev, _)| *prev >= t) {
            return Err(bad(n, format!("t {t} does not increase")));
        }
        rows.push((
            t,
            Second {
                slowdown,
                ..Second::at(rps)
            },
        ));
    }
    let Some(&(last, _)) = rows.last() else {
        return Err(bad(2, "no rows".into()));
    };
    let mut seconds = Vec::with_capacity(last as usize + 1);
    let mut current = Second::at(0.0);
    let mut next = rows.iter().peekable();
    for t in 0..=last {
        while let Some((_, s)) = next.next_if(|(rt, _)| *rt <= t) {
            current = *s;
        }
        seconds.push(current);
    }
    Ok(Scenario {
        name: name.to_string(),
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expect: Result<Vec<(f64, f64)>, &str>) {
        let got = parse_csv("s.csv", text);
        match (got, expect) {
            (Ok(s), Ok(want)) => {
                let got: Vec<(f64, f64)> = s.seconds.iter().map(|s| (s.rps, s.slowdown)).collect();
                assert_eq!(got, want, "{text:?}");
            }
            (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{text:?}: {e}"),
            (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn csv_table() {
        check(
            "t,rps\n0,10\n2,20\n",
            Ok(vec![(10.0, 1.0), (10.0, 1.0), (20.0, 1.0)]),
        );
        check("t,rps,slowdown\n1,5,2\n", Ok(vec![(0.0, 1.0), (5.0, 2.0)]));
        check("t, rps\n\n0, 1.5\n", Ok(vec![(1.5, 1.0)]));
        check("", Err("empty file"));
        check("time,rps\n0,1\n", Err("header"));
        check("t,rps\n", Err("no rows"));
        check("t,rps\n0,-1\n", Err("line 2: rps \"-1\""));
        check("t,rps\n0,1\n0,2\n", Err("line 3: t 0 does not increase"));
        check("t,rps\n0.5,1\n", Err("whole seconds"));
        check("t,rps\n0,1,2\n", Err("3 fields, want 2"));
        check(
            "t,rps,slowdown\n0,1,0\n",
            Err("slowdown must be above zero"),
        );
    }

    #[test]
    fn builtins_have_their_shape() {
        let d = builtin("diurnal").expect("diurnal");
        assert_eq!(d.seconds.len(), 86_400);
        let peak = d.seconds.iter().map(|s| s.rps).fold(0.0, f64::max);
        let low = d.seconds.iter().map(|s| s.rps).fold(f64::MAX, f64::min);
        assert!(
            (400.0..=440.0).contains(&peak) && (36.0..=44.0).contains(&low),
            "{low}..{peak}"
        );
        let f = builtin("flash-crowd").expect("flash-crowd");
        assert_eq!(f.seconds[1_900].rps, 600.0);
        let s = builtin("slow-dependency").expect("slow-dependency");
        assert_eq!(s.seconds[2_000].slowdown, 3.0);
        let r = builtin("release-regression").expect("release-regression");
        assert_eq!(r.seconds.len(), 86_400);
        assert_eq!(
            (r.seconds[43_199].release, r.seconds[43_200].release),
            (1.0, 1.5)
        );
        assert_eq!(r.seconds[50_000].rps, d.seconds[50_000].rps);
        assert!(builtin("nope").is_none());
    }
}
