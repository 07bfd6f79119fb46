// The SQS spill queue against a real SQS-compatible server: the spill queue contract, over the
// wire protocol @aws-sdk/client-sqs v3 speaks. The server is local-aws-sqs (a dev dependency),
// started in this process; with it not installed the tests say so and skip.
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import { SendMessageCommand, SQSClient, type SQSClientConfig } from '@aws-sdk/client-sqs';
import { afterAll, beforeAll } from 'vitest';
import { spillQueueContract } from '../actors/spillQueueContract.ts';
import { createSqsSpillQueue, ensureSqsSpillQueues } from './sqsSpillQueue.ts';

let server: Server | null = null;
let clientConfig: SQSClientConfig | null = null;
let whyAbsent = '';

/** Starts local-aws-sqs on a free port; null (with the reason) when the package is missing. */
export async function startLocalSqs(): Promise<{ server: Server; client: SQSClientConfig } | { absent: string }> {
  let createSqsServer: (options: { port: number; hostname?: string; emulateQueueCreationLifecycle?: boolean }) => Promise<Server>;
  try {
    ({ createSqsServer } = (await import('local-aws-sqs')) as unknown as { createSqsServer: typeof createSqsServer });
  } catch (error) {
    return { absent: `no SQS-compatible server: the dev dependency local-aws-sqs is not installed (${(error as Error).message})` };
  }
  const started = await createSqsServer({ port: 0, hostname: '127.0.0.1', emulateQueueCreationLifecycle: false });
  const address = started.address();
  if (address === null || typeof address === 'string') throw new Error('local-aws-sqs did not listen on a port');
  return {
    server: started,
    client: {
      region: 'us-east-1',
      endpoint: `http://127.0.0.1:${address.port}`,
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    },
  };
}

beforeAll(async () => {
  const started = await startLocalSqs();
  if ('absent' in started) whyAbsent = started.absent;
  else ({ server, client: clientConfig } = started);
});

afterAll(async () => {
  await new Promise((resolve) => (server === null ? resolve(undefined) : server.close(resolve)));
});

spillQueueContract('sqs (local-aws-sqs)', async () => {
  if (clientConfig === null) return whyAbsent;
  const config = clientConfig;
  const urls = await ensureSqsSpillQueues(config, `livevote-spill-${randomUUID()}`);
  let queue = createSqsSpillQueue({ ...urls, client: config });
  return {
    queue,
    reopen: async () => {
      await queue.close();
      queue = createSqsSpillQueue({ ...urls, client: config });
      return queue;
    },
    injectUndecodable: async () => {
      const sqs = new SQSClient(config);
      await sqs.send(new SendMessageCommand({ QueueUrl: urls.queueUrl, MessageBody: 'bm90IGEgYmF0Y2g=' }));
      sqs.destroy();
      return queue;
    },
    cleanup: async () => {
      await queue.close();
    },
  };
});
