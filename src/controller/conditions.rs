//! meta/v1 Conditions with the usual rules: `lastTransitionTime` moves only
//! when the status flips, and every condition carries `observedGeneration`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition statuses.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// Builds conditions for one object, reusing the transition times of the
/// conditions it had before.
pub struct Conditions<'a> {
    previous: &'a [Condition],
    generation: Option<i64>,
    now: Timestamp,
    built: Vec<Condition>,
}

impl<'a> Conditions<'a> {
    pub fn new(previous: &'a [Condition], generation: Option<i64>) -> Self {
        Conditions {
            previous,
            generation,
            now: Timestamp::now(),
            built: Vec::new(),
        }
    }

    pub fn set(
        &mut self,
        type_: &str,
        status: &str,
        reason: &str,
        message: impl Into<String>,
    ) -> &mut Self {
        let last_transition_time = self
            .previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(self.now));
        self.built.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: self.generation,
            last_transition_time,
        });
        self
    }

    pub fn build(self) -> Vec<Condition> {
        self.built
    }

    /// The conditions set here, and the previous ones of every other type unchanged: for a
    /// status whose conditions are decided at different times (a Backup's Ready and Verified).
    pub fn merged(self) -> Vec<Condition> {
        let mut merged = self.built;
        for previous in self.previous {
            if !merged.iter().any(|c| c.type_ == previous.type_) {
                merged.push(previous.clone());
            }
        }
        merged
    }
}

/// The status of a condition of the given type, if present.
pub fn status_of<'c>(conditions: &'c [Condition], type_: &str) -> Option<&'c str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let old = Time(Timestamp::from_second(1_000).unwrap());
        let previous = vec![Condition {
            type_: "Ready".into(),
            status: FALSE.into(),
            reason: "Running".into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: old.clone(),
        }];
        let mut same = Conditions::new(&previous, Some(2));
        same.set("Ready", FALSE, "StillRunning", "step 2 of 7");
        let same = same.build();
        assert_eq!(same[0].last_transition_time, old);
        assert_eq!(same[0].observed_generation, Some(2));

        let mut flipped = Conditions::new(&previous, Some(2));
        flipped.set("Ready", TRUE, "Succeeded", "");
        assert_ne!(flipped.build()[0].last_transition_time, old);
    }
}
