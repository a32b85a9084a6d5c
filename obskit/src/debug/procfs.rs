//! Figures only Linux's `/proc` gives: threads, descriptors, TCP connections of this process.
//! Elsewhere every function returns `None`, which the snapshot shows as `null`.

use std::collections::HashSet;

/// The process's open file descriptors.
pub(super) struct FdTable {
    /// How many are open.
    pub(super) count: u64,
    /// Inodes of the sockets among them: what ties a row of `/proc/self/net/tcp` to us.
    pub(super) socket_inodes: HashSet<u64>,
}

/// Lists `/proc/self/fd`. One `readlink` per descriptor: fine for a debug endpoint, which is
/// why it is read on demand and not by the background sampler.
#[cfg(target_os = "linux")]
pub(super) fn fd_table() -> Option<FdTable> {
    let mut count = 0u64;
    let mut socket_inodes = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").ok()? {
        let Ok(entry) = entry else { continue };
        count += 1;
        // A descriptor closed since the listing fails here; it was open when counted.
        if let Ok(target) = std::fs::read_link(entry.path()) {
            if let Some(inode) = target.to_str().and_then(socket_inode) {
                socket_inodes.insert(inode);
            }
        }
    }
    Some(FdTable {
        // The listing includes the descriptor `read_dir` holds open on the directory itself.
        count: count.saturating_sub(1),
        socket_inodes,
    })
}

#[cfg(not(target_os = "linux"))]
pub(super) fn fd_table() -> Option<FdTable> {
    None
}

/// Threads of the process, from the `Threads:` line of `/proc/self/status`.
#[cfg(target_os = "linux")]
pub(super) fn thread_count() -> Option<u64> {
    parse_threads(&std::fs::read_to_string("/proc/self/status").ok()?)
}

#[cfg(not(target_os = "linux"))]
pub(super) fn thread_count() -> Option<u64> {
    None
}

/// Established TCP connections (IPv4 and IPv6) owned by this process. `/proc/self/net/tcp`
/// lists every socket of the network namespace, so rows are kept only when their inode is one
/// of our descriptors.
#[cfg(target_os = "linux")]
pub(super) fn established_tcp(socket_inodes: &HashSet<u64>) -> Option<u64> {
    let mut readable = false;
    let mut total = 0;
    // tcp6 is missing when IPv6 is disabled: count what there is.
    for path in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        if let Ok(table) = std::fs::read_to_string(path) {
            readable = true;
            total += count_established(&table, socket_inodes);
        }
    }
    readable.then_some(total)
}

#[cfg(not(target_os = "linux"))]
pub(super) fn established_tcp(_socket_inodes: &HashSet<u64>) -> Option<u64> {
    None
}

/// The inode of a descriptor's link target `socket:[12345]`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_threads(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
}

/// Rows of a `/proc/net/tcp` table in state `01` (ESTABLISHED) whose inode is in `inodes`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn count_established(table: &str, inodes: &HashSet<u64>) -> u64 {
    const ESTABLISHED: &str = "01";
    let established = table
        .lines()
        .skip(1) // the header
        .filter(|row| {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            let mut fields = row.split_whitespace();
            let state = fields.nth(3);
            let inode = fields.nth(5).and_then(|inode| inode.parse::<u64>().ok());
            state == Some(ESTABLISHED) && inode.is_some_and(|inode| inodes.contains(&inode))
        })
        .count();
    established as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 222 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 333 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:C351 0100007F:1F90 06 00000000:00000000 03:00000F9B 00000000     0        0 0 3 0000000000000000
";

    #[test]
    fn established_rows_owned_by_us() {
        let ours: HashSet<u64> = [111, 222].into();
        // 111 listens (0A), 222 is established and ours, 333 is established but not ours,
        // the TIME_WAIT row has inode 0.
        assert_eq!(count_established(TCP, &ours), 1);
        assert_eq!(count_established(TCP, &[222, 333].into()), 2);
        assert_eq!(count_established(TCP, &HashSet::new()), 0);
        assert_eq!(count_established("", &ours), 0);
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[40213]"), Some(40213));
        assert_eq!(socket_inode("pipe:[40213]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    #[test]
    fn threads_line() {
        let status = "Name:\tobskit\nState:\tS (sleeping)\nThreads:\t17\nSigQ:\t0/63321\n";
        assert_eq!(parse_threads(status), Some(17));
        assert_eq!(parse_threads("Name:\tx\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        assert!(thread_count().unwrap() >= 1);
        let table = fd_table().unwrap();
        // stdin, stdout, stderr at least.
        assert!(table.count >= 3, "{}", table.count);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let table = fd_table().unwrap();
        // Both ends are ours, so both rows count.
        assert!(established_tcp(&table.socket_inodes).unwrap() >= 2);
        drop((client, server));
    }
}
