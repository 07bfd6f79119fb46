// Fan-out: N WebSocket subscribers on one election's results stream while votes flow, and how
// long a committed vote takes to reach them.
//
// Method (marker votes): the write load (wrk) votes for every candidate but the last. A marker
// sender in this process casts one vote at a time for the last candidate, each from a fresh
// voter, and notes when it sent it and when the 200 came back. Livevote answers a vote only
// after its COMMIT, so the commit happened between the two. The k-th marker is visible once a
// frame shows the marker candidate at >= k votes; every subscriber notes when it first saw each
// count. Reported:
//   - commit→delivery (the figure): first-seen − 200 received, per (marker, subscriber). The
//     commit precedes the 200, so this can only understate by the reply's own trip (sub-ms
//     to a few ms under load); a frame that beat the 200 here counts as 0.
//   - send→delivery: first-seen − sent: an upper bound that also holds the vote's commit wait.
//   - publish→delivery: receive time − the frame's `asOf` (when the server serialised it),
//     for every frame: the pure fan-out cost.
// Subscribers and marker sender share this process's clock; the server's asOf is the same
// machine's wall clock (ms resolution).
import { monitorEventLoopDelay } from 'node:perf_hooks';
import WebSocket from 'ws';

export interface FanoutOptions {
  readonly port: number;
  readonly electionId: string;
  readonly markerCandidateId: string;
  readonly subscriberToken: string;
  readonly subscribers: number;
  /** Fresh voters (not used by the load in this election), one per marker. */
  readonly markerVoters: readonly { userId: string; token: string }[];
  /** Starts the write load; resolves when it is done. Markers run while it runs. */
  readonly load: () => Promise<unknown>;
  /** Markers start this long after the load, and stop this long before its active window ends. */
  readonly markerWindowMs: { readonly startMs: number; readonly endMs: number };
  readonly log: (line: string) => void;
}

export interface Percentiles {
  readonly count: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

export interface FanoutResult {
  readonly subscribersConnected: number;
  readonly connectFailures: number;
  readonly connectMs: number;
  readonly markers: number;
  readonly commitToDeliveryMs: Percentiles;
  readonly sendToDeliveryMs: Percentiles;
  readonly publishToDeliveryMs: Percentiles;
  /** (marker, subscriber) pairs never seen by the end, out of markers × subscribers. */
  readonly missed: number;
  /** Frames that showed a marker before its 200 arrived here (counted as 0 ms). */
  readonly beforeAck: number;
  readonly framesReceived: number;
  readonly subscribersLost: number;
  /** This process's event-loop delay during the measurement (the measuring side's own lag). */
  readonly clientLoopDelayMsP99: number;
  readonly loadResult: unknown;
}

export function percentiles(values: ArrayLike<number>): Percentiles {
  const sorted = Float64Array.from(values).sort();
  const at = (p: number) => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!);
  return { count: sorted.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999), max: sorted.length === 0 ? NaN : sorted[sorted.length - 1]! };
}

/** The `votes` of the candidate with this id in a results payload (`{"candidateId":…,"name":…,"votes":N}`). */
function markerVotesOf(text: string, candidateId: string): number {
  const at = text.indexOf(candidateId);
  if (at < 0) throw new Error(`results frame without the marker candidate: ${text.slice(0, 200)}`);
  const votesAt = text.indexOf('"votes":', at);
  return Number.parseInt(text.slice(votesAt + 8, votesAt + 24), 10);
}

/** The payload's `asOf` (ISO 8601) as epoch ms. */
function asOfMs(text: string): number {
  const at = text.indexOf('"asOf":"');
  return Date.parse(text.slice(at + 8, text.indexOf('"', at + 8)));
}

interface Subscriber {
  socket: WebSocket;
  frames: number;
  maxSeen: number;
  /** firstSeenMs[k]: when this subscriber first saw the marker candidate at >= k votes. */
  readonly firstSeenMs: Float64Array;
  closed: boolean;
}

const connectConcurrency = 200;
const markersMax = 400;

export async function runFanout(options: FanoutOptions): Promise<FanoutResult> {
  const url = `ws://127.0.0.1:${options.port}/api/v1/results/stream/${options.electionId}`;
  const subscribers: Subscriber[] = [];
  const publishSamples: number[] = [];
  let measuring = false;
  let framesReceived = 0;
  let connectFailures = 0;
  const markerCount = Math.min(markersMax, options.markerVoters.length);

  const connectOne = () =>
    new Promise<void>((resolve) => {
      const sub: Subscriber = { socket: undefined as unknown as WebSocket, frames: 0, maxSeen: 0, firstSeenMs: new Float64Array(markerCount + 1), closed: false };
      const socket = new WebSocket(url, { headers: { authorization: `Bearer ${options.subscriberToken}` }, perMessageDeflate: false, skipUTF8Validation: true });
      sub.socket = socket;
      socket.on('message', (data: Buffer) => {
        const receivedMs = Date.now();
        sub.frames++;
        framesReceived++;
        // 5,000 subscribers get every frame at once: parse only the two fields needed, so this
        // process's own work inflates the delivery times it measures as little as possible.
        const text = data.toString('latin1');
        const markerVotes = markerVotesOf(text, options.markerCandidateId);
        const asOf = asOfMs(text);
        for (let k = sub.maxSeen + 1; k <= Math.min(markerVotes, markerCount); k++) sub.firstSeenMs[k] = receivedMs;
        if (markerVotes > sub.maxSeen) sub.maxSeen = markerVotes;
        // The first frame is the cached payload sent on connect, not a publish.
        if (measuring && sub.frames > 1) publishSamples.push(receivedMs - asOf);
        if (sub.frames === 1) resolve();
      });
      socket.on('error', () => {
        if (sub.frames === 0) {
          connectFailures++;
          resolve();
        }
      });
      socket.on('close', () => {
        sub.closed = true;
        if (sub.frames === 0) resolve();
      });
      subscribers.push(sub);
    });

  const connectStarted = performance.now();
  for (let started = 0; started < options.subscribers; started += connectConcurrency) {
    await Promise.all(Array.from({ length: Math.min(connectConcurrency, options.subscribers - started) }, connectOne));
  }
  const connectMs = performance.now() - connectStarted;
  const connected = subscribers.filter((s) => s.frames > 0 && !s.closed).length;
  options.log(`fan-out: ${connected}/${options.subscribers} subscribers connected in ${(connectMs / 1000).toFixed(1)} s`);

  const sentMs = new Float64Array(markerCount + 1);
  const ackMs = new Float64Array(markerCount + 1);
  let markersAcked = 0;
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  measuring = true;
  loopDelay.enable();
  const loadStarted = performance.now();
  const loadDone = options.load();
  let loadFinished = false;
  void loadDone.finally(() => {
    loadFinished = true;
  });

  const markerUrl = `http://127.0.0.1:${options.port}/api/v1/votes`;
  await new Promise((resolve) => setTimeout(resolve, options.markerWindowMs.startMs));
  while (markersAcked < markerCount && !loadFinished && performance.now() - loadStarted < options.markerWindowMs.endMs) {
    const voter = options.markerVoters[markersAcked]!;
    const k = markersAcked + 1;
    sentMs[k] = Date.now();
    const response = await fetch(markerUrl, {
      method: 'POST',
      headers: { authorization: `Bearer ${voter.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ electionId: options.electionId, candidateId: options.markerCandidateId, userId: voter.userId }),
    });
    const text = await response.text();
    ackMs[k] = Date.now();
    if (response.status !== 200) throw new Error(`fan-out marker vote ${k} answered ${response.status}: ${text}`);
    markersAcked = k;
    // Spread the markers over the publish period (250 ms) so they do not phase-lock with it.
    await new Promise((resolve) => setTimeout(resolve, 40 + Math.random() * 200));
  }
  const loadResult = await loadDone;
  // The last markers' frames: the publisher runs every 250 ms.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  measuring = false;
  loopDelay.disable();

  const commitSamples: number[] = [];
  const sendSamples: number[] = [];
  let missed = 0;
  let beforeAck = 0;
  for (const sub of subscribers) {
    if (sub.frames === 0) continue;
    for (let k = 1; k <= markersAcked; k++) {
      const seen = sub.firstSeenMs[k]!;
      if (seen === 0) {
        missed++;
        continue;
      }
      const fromAck = seen - ackMs[k]!;
      if (fromAck < 0) beforeAck++;
      commitSamples.push(Math.max(0, fromAck));
      sendSamples.push(seen - sentMs[k]!);
    }
  }
  const subscribersLost = subscribers.filter((s) => s.frames > 0 && s.closed).length;
  await Promise.all(
    subscribers.map(
      (sub) =>
        new Promise<void>((resolve) => {
          if (sub.closed || sub.socket.readyState === WebSocket.CLOSED) return resolve();
          sub.socket.once('close', () => resolve());
          sub.socket.terminate();
        }),
    ),
  );
  return {
    subscribersConnected: connected,
    connectFailures,
    connectMs,
    markers: markersAcked,
    commitToDeliveryMs: percentiles(commitSamples),
    sendToDeliveryMs: percentiles(sendSamples),
    publishToDeliveryMs: percentiles(publishSamples),
    missed,
    beforeAck,
    framesReceived,
    subscribersLost,
    clientLoopDelayMsP99: loopDelay.percentile(99) / 1e6,
    loadResult,
  };
}
