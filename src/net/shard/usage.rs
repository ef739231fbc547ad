//! The usage record of an allocation that ended ([`Event::Ended`]): the core's counts,
//! what the kernel fast path relayed for it (read while its relay sockets are still
//! open: the core emits the record after its `Unoffload` events and before its
//! `CloseRelay`), and the client's transport as the shard knows it (TCP or TLS), written
//! to the [`UsageSink`](crate::control::UsageSink) without waiting.
//!
//! [`Event::Ended`]: ferroturn_core::server::Event::Ended

use super::Shard;
use crate::control::UsageRecord;
use ferroturn_core::server::{FiveTuple, Transport, Usage};

impl Shard {
    pub(super) fn write_usage(&self, usage: &Usage) {
        let kernel = self.kernel_relayed(usage.id);
        let record = UsageRecord::new(usage, self.transport_name(&usage.five_tuple), kernel);
        self.usage.write(record);
    }

    /// `udp`, `tcp`, `tls` or `dtls`: a stream 5-tuple's listener says whether it is TLS.
    fn transport_name(&self, tuple: &FiveTuple) -> &'static str {
        match tuple.transport {
            Transport::Udp => "udp",
            Transport::Dtls => "dtls",
            Transport::Tcp => {
                let tls = self
                    .streams
                    .listeners
                    .get(usize::from(tuple.listener))
                    .is_some_and(|l| l.tls);
                if tls { "tls" } else { "tcp" }
            }
        }
    }
}
