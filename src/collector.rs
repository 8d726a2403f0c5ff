//! The tutorial's simulated `data_collector`: a background task that records
//! a random response time and status code for a random environment, as if a
//! fleet of services reported them, so the graphs have something to show.

use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::metrics::{RESPONSE_CODE, RESPONSE_TIME};
use crate::shutdown::CancellationToken;

/// The environments samples are recorded for (the `env` label).
const ENVS: [&str; 2] = ["testing", "production"];

/// Records one random sample every `interval` until shutdown.
pub async fn data_collector(interval: Duration, stopping: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    // After a stall (a suspended laptop, a starved runtime) carry on at the
    // normal pace rather than recording a burst of catch-up samples.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => record_random_sample(),
            () = stopping.cancelled() => return,
        }
    }
}

/// Records a response time uniform in [0.001, 10) seconds and a status code
/// uniform in [100, 599) for one of the environments.
fn record_random_sample() {
    let env = ENVS[rand::random_range(0..ENVS.len())];
    let response_time: f64 = rand::random_range(0.001..10.0);
    let status_code: u16 = rand::random_range(100..599);

    RESPONSE_TIME
        .with_label_values(&[env])
        .observe(response_time);
    // The generated codes are all in range, so every sample has a class.
    if let Some(class) = status_class(status_code) {
        RESPONSE_CODE
            .with_label_values(&[env, &status_code.to_string(), class])
            .inc();
    }
}

/// The class of an HTTP status code, as the `type` label spells it: `"100"`
/// for 1xx up to `"500"` for 5xx. Codes outside 100..=599 have no class.
fn status_class(code: u16) -> Option<&'static str> {
    match code {
        100..=199 => Some("100"),
        200..=299 => Some("200"),
        300..=399 => Some("300"),
        400..=499 => Some("400"),
        500..=599 => Some("500"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::status_class;

    #[test]
    fn every_class_boundary_is_classified_by_its_hundred() {
        let cases = [
            (100, Some("100")),
            (199, Some("100")),
            (200, Some("200")),
            (299, Some("200")),
            (300, Some("300")),
            (399, Some("300")),
            (400, Some("400")),
            (499, Some("400")),
            (500, Some("500")),
            (598, Some("500")),
            (599, Some("500")),
        ];
        for (code, class) in cases {
            assert_eq!(status_class(code), class, "class of {code}");
        }
    }

    #[test]
    fn codes_outside_the_http_range_have_no_class() {
        for code in [0, 99, 600, 999, u16::MAX] {
            assert_eq!(status_class(code), None, "class of {code}");
        }
    }
}
