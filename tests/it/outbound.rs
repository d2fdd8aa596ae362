//! The outbound session reader against the driver playing FreeSWITCH from capture 04a.

use std::time::Duration;

use finaz_freeswitch::esl::outbound::{Handoff, OutboundError, OutboundSession};
use tokio::net::TcpListener;

use crate::support::outbound_driver::{Handoff as DriverHandoff, connect_reply, drive};

#[tokio::test]
async fn reads_the_captured_channel_data_after_sending_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let call = "d1a1e700-0000-4000-8000-000000000042";
    let reply = connect_reply(
        call,
        &[("finaz_crm_id", "CRM 7001+ção"), ("finaz_ramal", "1001")],
    );
    let driver = tokio::spawn(drive(addr, reply, Duration::from_secs(5)));
    let (sock, _) = listener.accept().await.unwrap();
    let mut session = OutboundSession::new(sock);
    let data = session.connect(Duration::from_secs(5)).await.unwrap();
    assert_eq!(data.unique_id().as_deref(), Some(call));
    assert_eq!(
        data.variable("finaz_crm_id").as_deref(),
        Some("CRM 7001+ção")
    );
    assert_eq!(data.variable("finaz_ramal").as_deref(), Some("1001"));
    assert!(data.is_full());
    assert_eq!(data.header("Reply-Text").as_deref(), Some("+OK\n"));
    assert_eq!(
        session.wait_parked(Duration::from_secs(2)).await,
        Handoff::Parked
    );
    drop(session);
    let s = driver.await.unwrap();
    assert_eq!(s.commands, ["myevents", "connect"]);
    assert!(s.closed_by_adapter);
    assert_eq!(s.handoff, DriverHandoff::Returned);
}

/// The driver reproduces capture 09: a session that closes right after the connect reply
/// (as the adapter did before) leaves the channel parked; one that waits for the park does
/// not.
#[tokio::test]
async fn closing_before_the_park_leaves_the_channel_in_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let call = "d1a1e700-0000-4000-8000-000000000044";
    let driver = tokio::spawn(drive(
        addr,
        connect_reply(call, &[]),
        Duration::from_secs(5),
    ));
    let (sock, _) = listener.accept().await.unwrap();
    let mut session = OutboundSession::new(sock);
    session.connect(Duration::from_secs(5)).await.unwrap();
    drop(session);
    assert_eq!(driver.await.unwrap().handoff, DriverHandoff::StuckInPark);
}

#[tokio::test]
async fn a_peer_that_never_answers_times_out_and_one_that_hangs_up_is_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(s);
    });
    let (sock, _) = listener.accept().await.unwrap();
    let err = OutboundSession::new(sock)
        .connect(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, OutboundError::Timeout(_)), "{err}");
    silent.abort();

    let closer =
        tokio::spawn(async move { drop(tokio::net::TcpStream::connect(addr).await.unwrap()) });
    let (sock, _) = listener.accept().await.unwrap();
    closer.await.unwrap();
    let err = OutboundSession::new(sock)
        .connect(Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, OutboundError::ClosedEarly | OutboundError::Codec(_)),
        "{err}"
    );
}
