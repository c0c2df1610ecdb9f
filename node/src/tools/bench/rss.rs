//! The node's memory, read from `/proc/PID/status`.

/// A `kB` field of a `/proc/PID/status` text (e.g. `VmRSS`), in KiB.
pub fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A `kB` field of process `pid`'s status, in KiB; `None` once the process is gone.
pub fn read_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field_kib(&status, field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_by_exact_name() {
        let status = "Name:\tchorus\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nVmRSSx:\t1 kB\n";
        assert_eq!(status_field_kib(status, "VmRSS"), Some(102_400));
        assert_eq!(status_field_kib(status, "VmHWM"), Some(204_800));
        assert_eq!(status_field_kib(status, "VmSwap"), None);
        assert_eq!(status_field_kib(status, "Name"), None);
    }

    #[test]
    fn this_process_has_a_resident_size() {
        assert!(read_kib(std::process::id(), "VmRSS").is_some_and(|kib| kib > 0));
    }
}
