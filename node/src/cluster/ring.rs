//! Placement of partitions on live members.
