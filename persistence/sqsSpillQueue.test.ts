// The SQS spill queue against a real SQS-compatible server: the spill queue contract, over the
// wire protocol @aws-sdk/client-sqs v3 speaks. The server is local-aws-sqs (a dev dependency),
// started in this process; with it not installed the tests say so and skip.
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import { SendMessageCommand, SQSClient, type SQSClientConfig } from '@aws-sdk/client-sqs';
import { afterAll, beforeAll } from 'vitest';
import { spillQueueContract } from '../actors/spillQueueContract.ts';
import { startLocalSqs } from '../infra/testing/localSqs.ts';
import { createSqsSpillQueue, ensureSqsSpillQueues } from './sqsSpillQueue.ts';

let server: Server | null = null;
let clientConfig: SQSClientConfig | null = null;
let whyAbsent = '';

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
