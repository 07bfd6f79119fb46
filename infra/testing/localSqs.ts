// A real SQS-compatible server for tests: local-aws-sqs (a dev dependency) in this process,
// speaking the protocol @aws-sdk/client-sqs v3 uses. Tests that need it skip, saying why, when
// the package is not installed.
import type { Server } from 'node:http';
import type { SQSClientConfig } from '@aws-sdk/client-sqs';

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

