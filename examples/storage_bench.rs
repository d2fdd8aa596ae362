//! Storage alone: reports, leases and deliveries through the executor (benchmark helper).
use finaz_freeswitch::storage::{DialerReport, Storage, now_ms};
use std::time::Instant;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(&format!("sqlite://{}", dir.path().join("b.db").display()))
        .await
        .unwrap();
    const N: usize = 10_000;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..N).step_by(16) {
                let call = format!("b0b0b0b0-0000-4000-8000-{i:012}");
                s.report_dialer_call(make(call)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let reports = t.elapsed();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let e = s.lease_due(now_ms(), 1, now_ms() + 60_000).await.unwrap();
                let Some(e) = e.into_iter().next() else {
                    return;
                };
                s.mark_delivered(e.id).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let drain = t.elapsed();
    println!(
        "reports {:.0}/s, lease+deliver {:.0}/s",
        N as f64 / reports.as_secs_f64(),
        N as f64 / drain.as_secs_f64()
    );
}

fn make(call: String) -> DialerReport {
    DialerReport {
        call_id: call.clone(),
        customer_leg: call.clone(),
        crm_id: "CRM".into(),
        telefone: Some("41988445566".into()),
        ramal: Some("1001".into()),
        legs: vec![call.clone()],
        give_up_at: now_ms() + 86_400_000,
        url: format!("http://finaz/x?cid={call}"),
        node: None,
    }
}
