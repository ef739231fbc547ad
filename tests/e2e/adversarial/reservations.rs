//! RESERVATION-TOKEN (RFC 8656 sections 7.2 and 14.9): a reserved port goes to the one
//! Allocate that presents its token, and guessing tokens gets nothing.

use super::*;

/// A guessed RESERVATION-TOKEN gets 508 and no port, however many are tried (256 here,
/// from another user): the token is 64 random bits, so the reserved port is still there
/// for the client that holds the real token, which gets the port above the even one.
#[tokio::test]
async fn reservation_tokens_cannot_be_guessed() {
    let server = start_server("").await;
    let mut rtp = client(&server, "alice").await;
    let even = [
        RequestAttr::RequestedTransport(17),
        RequestAttr::EvenPort(true),
    ];
    let r = rtp.request(method::ALLOCATE, &even).await.unwrap();
    let port = r.xor_relayed.expect("a relayed address").port();
    let token = r.reservation_token.expect("a RESERVATION-TOKEN");

    let mut mallory = client(&server, "mallory").await;
    for _ in 0..256 {
        let guess: [u8; 8] = rand::random();
        if guess == token {
            continue;
        }
        let claim = [
            RequestAttr::RequestedTransport(17),
            RequestAttr::ReservationToken(guess),
        ];
        assert_eq!(code(mallory.request(method::ALLOCATE, &claim).await), 508);
    }

    let mut rtcp = client(&server, "alice").await;
    let claim = [
        RequestAttr::RequestedTransport(17),
        RequestAttr::ReservationToken(token),
    ];
    let r = rtcp.request(method::ALLOCATE, &claim).await.unwrap();
    assert_eq!(r.xor_relayed.unwrap().port(), port + 1);
    // Handed out once: mallory, holding the real token now, gets nothing either.
    assert_eq!(code(mallory.request(method::ALLOCATE, &claim).await), 508);
}
