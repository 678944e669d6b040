//! The arms a selector chooses among.
use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainingError};
use crate::model::{StudentClass, StudentSpec, TaskKind};

/// A choice for a task: a student class and size, or keeping the teacher (distill nothing).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Arm {
    /// No student meets the objective: keep calling the teacher.
    Teacher,
    Student(StudentSpec),
}

impl Arm {
    pub fn is_teacher(&self) -> bool {
        matches!(self, Arm::Teacher)
    }

    pub fn student(&self) -> Option<&StudentSpec> {
        match self {
            Arm::Teacher => None,
            Arm::Student(s) => Some(s),
        }
    }
}

impl fmt::Display for Arm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arm::Teacher => f.write_str("keep-the-teacher"),
            Arm::Student(s) => write!(f, "{s}"),
        }
    }
}

impl FromStr for Arm {
    type Err = TrainingError;

    /// `class/size`, or `keep-the-teacher` (also `teacher`).
    fn from_str(s: &str) -> Result<Arm> {
        match s.trim() {
            "keep-the-teacher" | "teacher" | "keep_the_teacher" => Ok(Arm::Teacher),
            other => Ok(Arm::Student(other.parse()?)),
        }
    }
}

/// Every arm for a task of `kind`: each class serving it in each named size (cheapest class first),
/// then keep-the-teacher.
pub fn arms_for(kind: TaskKind) -> Vec<Arm> {
    let mut arms: Vec<Arm> = StudentClass::ALL
        .into_iter()
        .filter(|c| c.task() == kind)
        .flat_map(|class| {
            StudentClass::SIZES.into_iter().map(move |size| {
                Arm::Student(StudentSpec {
                    class,
                    size: size.to_string(),
                })
            })
        })
        .collect();
    arms.push(Arm::Teacher);
    arms
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_class_of_the_kind_in_every_size_and_the_teacher() {
        let arms = arms_for(TaskKind::Classification);
        let students = arms.iter().filter(|a| !a.is_teacher()).count();
        let classes = StudentClass::ALL
            .iter()
            .filter(|c| c.task() == TaskKind::Classification)
            .count();
        assert_eq!(students, classes * StudentClass::SIZES.len());
        assert_eq!(arms.last(), Some(&Arm::Teacher));
        assert!(
            arms_for(TaskKind::Generation)
                .iter()
                .filter_map(Arm::student)
                .all(|s| s.class.task() == TaskKind::Generation)
        );
        for a in &arms {
            assert_eq!(&a.to_string().parse::<Arm>().unwrap(), a);
        }
        assert!("nonsense/huge".parse::<Arm>().is_err());
    }
}
