//! The bench's flags (`--duration`, `--scaled-objects`, …), parsed by hand: `cargo bench`
//! passes its own `--bench` to every bench binary.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Args {
    pub duration: Duration,
    pub scaled_objects: usize,
    pub spans_per_second: u64,
    pub polling_interval: Duration,
    pub connections: usize,
    pub flood: Duration,
    pub saturation_round: Duration,
    pub rounds: usize,
    pub json: bool,
}

pub fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        duration: Duration::from_secs(60),
        scaled_objects: 1_500,
        spans_per_second: 200_000,
        polling_interval: Duration::from_secs(30),
        connections: 1,
        flood: Duration::from_secs(10),
        saturation_round: Duration::from_secs(3),
        rounds: 3,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let duration = |v: String| {
            humantime::parse_duration(&v).map_err(|e| format!("bad duration {v:?}: {e}"))
        };
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|e| format!("bad number {v:?}: {e}"))
        };
        match flag.as_str() {
            // Cargo passes `--bench` to every bench binary.
            "--bench" => {}
            "--duration" => args.duration = duration(value("--duration")?)?,
            "--scaled-objects" => {
                args.scaled_objects = number(value("--scaled-objects")?)? as usize
            }
            "--spans-per-second" => args.spans_per_second = number(value("--spans-per-second")?)?,
            "--polling-interval" => args.polling_interval = duration(value("--polling-interval")?)?,
            "--connections" => args.connections = number(value("--connections")?)?.max(1) as usize,
            "--flood" => args.flood = duration(value("--flood")?)?,
            "--saturation-round" => args.saturation_round = duration(value("--saturation-round")?)?,
            "--rounds" => args.rounds = number(value("--rounds")?)?.max(1) as usize,
            "--json" => args.json = true,
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    if args.scaled_objects == 0 {
        return Err("--scaled-objects must be at least 1".into());
    }
    Ok(args)
}
