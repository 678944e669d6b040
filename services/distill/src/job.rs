//! A job's stages and states as closed enums, so every `match` lists the cases. The strings they
//! read and write (`as_str` / `FromStr`) are those the database has always stored and the proto
//! carries: existing databases load unchanged.
use std::{fmt, str::FromStr};

/// Declares a string-backed enum: its variants with their stored names, `as_str`, `Display`,
/// `FromStr` (refusing unknown strings, with the type's name in the error) and `ALL`.
macro_rules! stored_enum {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $v),+
        }

        impl $name {
            /// Every case, in declaration order.
            pub const ALL: &[$name] = &[$($name::$v),+];

            /// The name stored in the database and sent in the proto.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($s => Ok($name::$v),)+
                    other => Err(UnknownName { what: $what, name: other.to_string() }),
                }
            }
        }
    };
}

/// A stored name that is none of the cases (a database written by a newer version, or corrupted).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?}")]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
}

stored_enum! {
    /// A stage of a job, in the order they run; `Screen` runs only when the target is `auto`
    /// (auto-target's screening); `Deploy` runs on request once the report exists.
    Stage, "stage" {
        Validate = "validate",
        Label = "label",
        Screen = "screen",
        Train = "train",
        Evaluate = "evaluate",
        Report = "report",
        Deploy = "deploy",
    }
}

impl Stage {
    /// The stages every job runs, in order.
    pub const PIPELINE: [Stage; 6] = [
        Stage::Validate,
        Stage::Label,
        Stage::Screen,
        Stage::Train,
        Stage::Evaluate,
        Stage::Report,
    ];
}

stored_enum! {
    /// Where a job stands as a whole.
    JobState, "job state" {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl JobState {
    /// Queued or running: a process may (still) run it, and it can be cancelled.
    pub fn is_unfinished(self) -> bool {
        match self {
            JobState::Queued | JobState::Running => true,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled => false,
        }
    }
}

stored_enum! {
    /// Where one stage of a job stands.
    StageState, "stage state" {
        Running = "running",
        Done = "done",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_the_case_that_wrote_it() {
        for s in Stage::ALL {
            assert_eq!(s.as_str().parse::<Stage>(), Ok(*s));
        }
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(*s));
        }
        for s in StageState::ALL {
            assert_eq!(s.as_str().parse::<StageState>(), Ok(*s));
        }
    }

    #[test]
    fn the_stored_names_are_the_ones_existing_databases_hold() {
        let stages: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            stages,
            [
                "validate", "label", "screen", "train", "evaluate", "report", "deploy"
            ]
        );
        let states: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            states,
            ["queued", "running", "succeeded", "failed", "cancelled"]
        );
        let stage_states: Vec<&str> = StageState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(stage_states, ["running", "done", "failed", "cancelled"]);
    }

    #[test]
    fn an_unknown_name_is_refused_with_what_it_was_meant_to_be() {
        let e = "paused".parse::<JobState>().unwrap_err();
        assert_eq!(e.to_string(), "unknown job state \"paused\"");
        assert!("".parse::<Stage>().is_err());
    }
}
