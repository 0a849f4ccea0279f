//! Carrying a miss's resolution out: the loop between [`Resolution`]'s steps and the
//! world. The daemon's world is the network, the store and tokio's clock (its
//! [`Carrier`] is in `peers.rs`); a test can script one. The simulator's simulated time
//! runs the same machine from its event queue instead (an await cannot wait for an
//! event queue), and the differential test in `simulations/src/des/differential.rs`
//! holds the two to the same steps.

use std::time::Duration;

use ghmesh_protocol::{Announce, LookupReply};
use libp2p::PeerId;

use crate::policy::resolve::{Ask, End, Input, Resolution, Start, Step, View};

/// What carries a resolution's steps out. Each method answers one kind of [`Step`];
/// times are on the resolution's time axis (see [`crate::policy::resolve`]).
// Futures are not required to be `Send` here: a carrier's are when it is (the
// daemon's, awaited inside its read path), and a scripted one need not be.
#[allow(async_fn_in_trait)]
pub trait Carrier {
    /// Calls `f` with the node as the resolution sees it now.
    fn view<R>(&mut self, f: impl FnOnce(&View<'_>) -> R) -> R;
    /// [`Step::AwaitMember`]: [`Input::Admitted`] or, at `until`, [`Input::Tick`].
    async fn await_member(&mut self, until: Duration) -> Input;
    /// [`Step::FetchBody`]: pulled and stored.
    async fn fetch_body(&mut self, from: PeerId, budget: Duration) -> bool;
    /// [`Step::Sleep`].
    async fn sleep_until(&mut self, until: Duration);
    /// [`Step::Ask`]: the answer, `None` when none came within `budget`.
    async fn ask(&mut self, peer: PeerId, ask: Ask, budget: Duration) -> Option<LookupReply>;
    /// [`Step::AskAll`]: every answer, in the order of `peers`.
    async fn ask_all(
        &mut self,
        peers: &[PeerId],
        budget: Duration,
    ) -> Vec<(PeerId, Option<LookupReply>)>;
    /// [`Step::Accept`]: checked and stored.
    async fn accept(&mut self, from: PeerId, announce: Announce) -> bool;
    /// [`Step::Wait`]: a fresh copy is held now, or arrived before `until`.
    async fn wait(&mut self, peer: PeerId, until: Duration) -> bool;
    /// [`Step::Release`], without waiting.
    fn release(&mut self, owner: PeerId);
    /// Sees every step before it is carried out.
    fn saw(&mut self, _step: &Step) {}
}

/// Runs the resolution `start` describes to its end, with `carrier`; returns how it
/// ended and how many redirects it followed.
pub async fn drive<C: Carrier>(carrier: &mut C, start: Start) -> (End, u32) {
    let (mut machine, mut step) = carrier.view(|v| Resolution::start(start, v));
    let end = loop {
        carrier.saw(&step);
        let input = match step {
            Step::Done(end) => break end,
            Step::AwaitMember { until } => carrier.await_member(until).await,
            Step::FetchBody { from, budget } => Input::Body(carrier.fetch_body(from, budget).await),
            Step::Sleep { until } => {
                carrier.sleep_until(until).await;
                Input::Tick
            }
            Step::Ask {
                peer, ask, budget, ..
            } => Input::Reply(carrier.ask(peer, ask, budget).await),
            Step::AskAll { peers, budget } => Input::Replies(carrier.ask_all(&peers, budget).await),
            Step::Accept { from, announce } => {
                Input::Accepted(carrier.accept(from, *announce).await)
            }
            Step::Wait { peer, until } => {
                if carrier.wait(peer, until).await {
                    Input::Arrived
                } else {
                    Input::Tick
                }
            }
            Step::Release { owner } => {
                carrier.release(owner);
                Input::Released
            }
        };
        step = carrier.view(|v| machine.handle(input, v));
    };
    (end, machine.redirects)
}
