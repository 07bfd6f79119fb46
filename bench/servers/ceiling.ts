// The ceiling: a bare uWebSockets.js server (the same native binary the gateway loads) answering
// the vote-shaped POST with a fixed JSON. It reads the whole body, as any vote handler must, and
// does nothing else: no parsing, no auth, no storage. Nothing built on this stack can be faster.
//
//   node --import tsx bench/servers/ceiling.ts   (PORT=0 picks a port; prints BENCH_LISTENING <port>)
import { uws } from '../../gateway/uws.ts';

const bodyBytesMax = 4 * 1024;
const reply = JSON.stringify({ voteId: '0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b', status: 'accepted', acceptedAt: '2024-01-01T00:00:00.000Z' });

const app = uws.App();
app.post('/api/v1/votes', (res) => {
  let aborted = false;
  let received = 0;
  res.onAborted(() => {
    aborted = true;
  });
  res.onData((chunk, isLast) => {
    received += chunk.byteLength;
    if (aborted || !isLast) return;
    res.cork(() => {
      if (received > bodyBytesMax) res.writeStatus('413 Payload Too Large').end();
      else res.writeStatus('200 OK').writeHeader('content-type', 'application/json').end(reply);
    });
  });
});
app.any('/*', (res) => {
  res.writeStatus('404 Not Found').end();
});

app.listen('127.0.0.1', Number(process.env.PORT ?? 0), (socket) => {
  if (!socket) {
    process.stderr.write('ceiling server: could not listen\n');
    process.exit(1);
  }
  process.stdout.write(`BENCH_LISTENING ${uws.us_socket_local_port(socket)}\n`);
});
process.on('SIGTERM', () => process.exit(0));
