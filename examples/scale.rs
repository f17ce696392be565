//! A tree of N simulated TUs in virtual time (issue 6, "Scale"):
//!
//! ```sh
//! cargo run --release --example scale -- --tus 10000 --fanout 32 --loss 2 --messages 1000
//! ```
//!
//! builds the tree with repair agents of fan-out F, streams M messages with
//! independent loss on every link, and prints as its last line
//! `scale: tus=N levels=L delivered=D/N identical=yes|no to_ctl_per_data=X
//! max_parent_ctl_per_data=Y wall_s=W`. X and Y are control packets received
//! per DATA packet, at the TO and at the busiest parent, during the data
//! phase. Other options: --len BYTES (message size, 1000), --gap-us (virtual
//! time between messages, 1000), --ro reliable|semi|unreliable, --seed.

use std::process::ExitCode;
use std::time::Duration;

use ectp::proto::scale::{self, Params};
use ectp::wire::Ro;

fn usage() -> ExitCode {
    eprintln!(
        "usage: scale [--tus N] [--fanout F] [--loss PCT] [--messages M] [--len BYTES] [--gap-us US] [--ro reliable|semi|unreliable] [--seed S]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut p = Params::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(v) = args.next() else { return usage() };
        let ok = match flag.as_str() {
            "--tus" => v.parse().map(|x| p.tus = x).is_ok(),
            "--fanout" => v.parse().map(|x| p.fanout = x).is_ok(),
            "--loss" => v.parse().map(|x| p.loss_pct = x).is_ok(),
            "--messages" => v.parse().map(|x| p.messages = x).is_ok(),
            "--len" => v.parse().map(|x| p.message_len = x).is_ok(),
            "--gap-us" => v.parse().map(|x| p.gap = Duration::from_micros(x)).is_ok(),
            "--seed" => v.parse().map(|x| p.seed = x).is_ok(),
            "--ro" => match v.as_str() {
                "reliable" => Some(Ro::Reliable),
                "semi" => Some(Ro::SemiReliable),
                "unreliable" => Some(Ro::Unreliable),
                _ => None,
            }
            .map(|ro| p.ro = ro)
            .is_some(),
            _ => false,
        };
        if !ok || p.tus == 0 || p.fanout == 0 {
            return usage();
        }
    }
    let r = scale::run(&p);
    println!(
        "data: packets={} repairs_per_data={:.4} lost={} ras={} virtual_s={:.1}",
        r.data_packets, r.repairs_per_data, r.lost, r.ras, r.sim_s
    );
    println!("{}", r.line());
    if r.delivered == r.tus && r.identical { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
