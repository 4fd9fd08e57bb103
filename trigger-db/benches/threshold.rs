//! Threshold engine throughput: parameter reports evaluated per second by
//! `threshold::Engine::evaluate`, in-process, on one thread (the issue asks
//! for at least 1,000,000/s on one core).
//!
//! The configuration is what a busy multihomed host might run: 10
//! interfaces (wlan0..4 with link type ieee802-11, wwan0..4 with lte), per
//! interface a signal-strength "below" threshold (normal, hysteresis 5) and
//! a SINR "below" threshold (normal, hysteresis 2), plus one
//! link-type-scoped packet-error-rate "above" threshold for every
//! ieee802-11 link and one one-shot threshold that fires once: 22
//! thresholds. The reports (prepared before timing) carry one parameter
//! each, signal strength or SINR in turn, following per-interface random
//! walks (a fixed-seed generator) that cross their thresholds now and
//! then, 100 ms apart per interface; every few reports carries packet error
//! rate instead. What crosses produces derived triggers (a report and,
//! falling, a Link_Going_Down), which the loop discards.
//!
//! Not measured: the writer around it (store, hub), decoding from the wire,
//! or more than one parameter per report.
//!
//! Run: `cargo bench -p trigger-db --bench threshold` (env
//! `THRESHOLD_REPORTS`, default 2,000,000 evaluated after a warm-up).

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use trigger_db::{
    model::{
        Detail, Interface, LinkParameter, LinkParameterType, LinkType, ParameterUnit, Source,
        Timestamp, Trigger, TriggerType,
    },
    threshold::{Direction, Engine, Scope, Threshold},
};

const INTERFACES: usize = 10;
/// Distinct prepared reports; the timed loop cycles over them.
const PREPARED: usize = 100_000;

/// A small fixed-seed generator (xorshift64*): the same series every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn ifname(i: usize) -> String {
    if i < INTERFACES / 2 {
        format!("wlan{i}")
    } else {
        format!("wwan{}", i - INTERFACES / 2)
    }
}

fn link_type(i: usize) -> LinkType {
    if i < INTERFACES / 2 {
        LinkType::Ieee802_11
    } else {
        LinkType::Lte
    }
}

fn thresholds() -> Vec<Threshold> {
    let mut v = Vec::new();
    let mut id = 0;
    let mut add = |scope, parameter, value, direction, hysteresis, one_shot| {
        id += 1;
        v.push(Threshold {
            id,
            scope,
            parameter,
            value,
            direction,
            hysteresis,
            one_shot,
            spent: false,
        });
    };
    for i in 0..INTERFACES {
        let s = || Scope::Interface(ifname(i));
        add(
            s(),
            LinkParameterType::SignalStrength,
            40.0,
            Direction::Below,
            5.0,
            false,
        );
        add(
            s(),
            LinkParameterType::Sinr,
            5.0,
            Direction::Below,
            2.0,
            false,
        );
    }
    add(
        Scope::LinkType(LinkType::Ieee802_11),
        LinkParameterType::PacketErrorRate,
        10.0,
        Direction::Above,
        3.0,
        false,
    );
    add(
        Scope::Interface(ifname(0)),
        LinkParameterType::SignalStrength,
        20.0,
        Direction::Below,
        0.0,
        true,
    );
    v
}

fn reports() -> Vec<Trigger> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut signal = [60.0f64; INTERFACES];
    let mut sinr = [12.0f64; INTERFACES];
    let mut per = [2.0f64; INTERFACES];
    let mut out = Vec::with_capacity(PREPARED);
    for n in 0..PREPARED {
        let i = n % INTERFACES;
        let round = n / INTERFACES;
        let (kind, value, unit) = match round % 5 {
            0 | 2 => {
                signal[i] = (signal[i] + (rng.next() - 0.5) * 8.0).clamp(0.0, 100.0);
                (
                    LinkParameterType::SignalStrength,
                    signal[i],
                    ParameterUnit::Percent,
                )
            }
            1 | 3 => {
                sinr[i] = (sinr[i] + (rng.next() - 0.5) * 3.0).clamp(-5.0, 30.0);
                (LinkParameterType::Sinr, sinr[i], ParameterUnit::Db)
            }
            _ => {
                per[i] = (per[i] + (rng.next() - 0.5) * 4.0).clamp(0.0, 30.0);
                (
                    LinkParameterType::PacketErrorRate,
                    per[i],
                    ParameterUnit::Percent,
                )
            }
        };
        let mut t = Trigger::new(Source::NetworkManager, TriggerType::LinkParametersReport);
        t.observed_at = Timestamp(1_800_000_000_000_000_000 + round as i64 * 100_000_000);
        t.interface = Some(Interface {
            index: i as u32 + 2,
            name: ifname(i),
            link_type: Some(link_type(i)),
            ..Default::default()
        });
        t.detail = Some(Detail::ParametersReport {
            parameters: vec![LinkParameter {
                kind,
                value,
                unit: Some(unit),
                threshold_crossed: None,
            }],
        });
        out.push(t);
    }
    out
}

/// Evaluates `n` reports (cycling over the prepared ones); returns the time
/// taken and how many triggers were derived.
fn run(engine: &mut Engine, reports: &[Trigger], n: usize) -> (Duration, usize) {
    let mut out = Vec::with_capacity(4);
    let mut derived = 0;
    let start = Instant::now();
    for t in reports.iter().cycle().take(n) {
        black_box(engine.evaluate(black_box(t), &mut out));
        derived += out.len();
        out.clear();
    }
    (start.elapsed(), derived)
}

fn main() {
    let n: usize = std::env::var("THRESHOLD_REPORTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2_000_000);
    let reports = reports();
    let mut engine = Engine::new(thresholds());
    // Warm-up: caches, the crossing state of every (threshold, interface).
    run(&mut engine, &reports, PREPARED);
    let (took, derived) = run(&mut engine, &reports, n);
    let rate = n as f64 / took.as_secs_f64();
    println!(
        "threshold engine: {} thresholds, {INTERFACES} interfaces: {n} reports in {:.3} s = \
         {:.0} reports/s ({:.0} ns each), {derived} derived triggers",
        engine.thresholds().len(),
        took.as_secs_f64(),
        rate,
        took.as_nanos() as f64 / n as f64,
    );
}
