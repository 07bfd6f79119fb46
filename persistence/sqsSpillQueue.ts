// The spill queue of cluster mode: Amazon SQS through @aws-sdk/client-sqs. One message per
// batch, msgpackr-encoded (spillCodec.ts) and base64'd (a message body is text). Dead letters go
// to a second queue, sent there explicitly with the reason, then deleted from the main one (SQS's
// own redrive policy would move them silently, without a reason or a count).
//
// Every call has a deadline (an AbortSignal): a spill that SQS does not confirm in time is a
// failed spill, and the committer answers its votes 503 rather than let them wait.
//
// The age of the oldest batch: SQS exposes it only as a CloudWatch metric, so this adapter
// reports the oldest batch it has itself sent or received and not yet seen acked; with the node
// that spills also draining (how livevote runs) that is the queue's oldest. Alert on the
// CloudWatch metric ApproximateAgeOfOldestMessage too when several nodes share a queue.
import {
  ChangeMessageVisibilityCommand,
  CreateQueueCommand,
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  SQSClient,
  type SQSClientConfig,
} from '@aws-sdk/client-sqs';
import type { QueuedBatch, SpilledBatch, SpillQueue, SpillQueueDepth, UndecodableMessage } from '../actors/ports.ts';
import { decodeSpilledBatch, encodeSpilledBatch } from './spillCodec.ts';

/** SQS's message size limit. */
export const sqsMessageBytesMax = 256 * 1024;
/** Received-but-unacked messages tracked for dead-lettering and the oldest age; a bound, not a need. */
const trackedMessagesMax = 100_000;

export interface SqsSpillQueueOptions {
  readonly queueUrl: string;
  readonly deadLetterQueueUrl: string;
  /** Region, endpoint, credentials; the SDK's defaults (AWS_REGION, AWS_ENDPOINT_URL_SQS, …) otherwise. */
  readonly client?: SQSClientConfig;
  /** Each SQS call is given up after this long. */
  readonly requestTimeoutMs?: number;
}

interface Tracked {
  readonly spilledAtMs: number;
  /** The message body, kept for dead-lettering while a receipt for it is out. */
  body: string | null;
}

export class SqsSpillQueue implements SpillQueue {
  private readonly client: SQSClient;
  private readonly queueUrl: string;
  private readonly deadLetterQueueUrl: string;
  private readonly requestTimeoutMs: number;
  /** messageId → what this process knows of it. */
  private readonly tracked = new Map<string, Tracked>();
  /** receipt handle → messageId. */
  private readonly receipts = new Map<string, string>();

  constructor(options: SqsSpillQueueOptions) {
    this.client = new SQSClient({ maxAttempts: 2, ...options.client });
    this.queueUrl = options.queueUrl;
    this.deadLetterQueueUrl = options.deadLetterQueueUrl;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 2_000;
    if (!(Number.isInteger(this.requestTimeoutMs) && this.requestTimeoutMs >= 1)) throw new Error('requestTimeoutMs must be a positive integer');
  }

  async send(batch: SpilledBatch): Promise<void> {
    const body = encodeSpilledBatch(batch).toString('base64');
    if (body.length > sqsMessageBytesMax) {
      throw new Error(`batch ${batch.batchId} encodes to ${body.length} bytes, over SQS's ${sqsMessageBytesMax}: lower LIVEVOTE_BATCH_ROWS_MAX`);
    }
    const sent = await this.client.send(new SendMessageCommand({ QueueUrl: this.queueUrl, MessageBody: body }), this.deadline());
    if (sent.MessageId !== undefined) this.track(sent.MessageId, { spilledAtMs: batch.spilledAtMs, body: null });
  }

  async receive(max: number, leaseMs: number): Promise<(QueuedBatch | UndecodableMessage)[]> {
    const answer = await this.client.send(
      new ReceiveMessageCommand({
        QueueUrl: this.queueUrl,
        MaxNumberOfMessages: Math.max(1, Math.min(10, max)),
        VisibilityTimeout: Math.max(1, Math.ceil(leaseMs / 1000)),
        WaitTimeSeconds: 0,
        // Both spellings, 'All': local-aws-sqs (the test server) reads only the older one.
        MessageSystemAttributeNames: ['All'],
        AttributeNames: ['All'],
      }),
      this.deadline(),
    );
    const out: (QueuedBatch | UndecodableMessage)[] = [];
    for (const message of answer.Messages ?? []) {
      const receipt = message.ReceiptHandle;
      const messageId = message.MessageId;
      if (receipt === undefined || messageId === undefined) continue;
      const receiveCount = Number(message.Attributes?.ApproximateReceiveCount ?? '1');
      const body = message.Body ?? '';
      this.receipts.set(receipt, messageId);
      try {
        const batch = decodeSpilledBatch(Buffer.from(body, 'base64'));
        this.track(messageId, { spilledAtMs: batch.spilledAtMs, body });
        out.push({ batch, receipt, receiveCount });
      } catch (error) {
        this.track(messageId, { spilledAtMs: Date.now(), body });
        out.push({ receipt, receiveCount, error: (error as Error).message });
      }
    }
    return out;
  }

  async ack(receipt: string): Promise<void> {
    await this.client.send(new DeleteMessageCommand({ QueueUrl: this.queueUrl, ReceiptHandle: receipt }), this.deadline());
    this.forget(receipt);
  }

  async release(receipt: string): Promise<void> {
    await this.client.send(new ChangeMessageVisibilityCommand({ QueueUrl: this.queueUrl, ReceiptHandle: receipt, VisibilityTimeout: 0 }), this.deadline());
  }

  async deadLetter(receipt: string, reason: string): Promise<void> {
    const messageId = this.receipts.get(receipt);
    const body = messageId === undefined ? undefined : this.tracked.get(messageId)?.body;
    if (body === undefined || body === null) throw new Error('dead-letter needs a receipt this process received');
    await this.client.send(
      new SendMessageCommand({
        QueueUrl: this.deadLetterQueueUrl,
        MessageBody: body,
        MessageAttributes: { reason: { DataType: 'String', StringValue: reason.slice(0, 1000) || 'unknown' } },
      }),
      this.deadline(),
    );
    await this.ack(receipt);
  }

  async depth(): Promise<SpillQueueDepth> {
    const batches = await this.approximateCount(this.queueUrl);
    let oldest: number | null = null;
    for (const item of this.tracked.values()) if (oldest === null || item.spilledAtMs < oldest) oldest = item.spilledAtMs;
    return { batches, oldestSpilledAtMs: batches === 0 ? null : oldest };
  }

  async deadLetterCount(): Promise<number> {
    return this.approximateCount(this.deadLetterQueueUrl);
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  private async approximateCount(queueUrl: string): Promise<number> {
    const answer = await this.client.send(
      new GetQueueAttributesCommand({
        QueueUrl: queueUrl,
        AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible', 'ApproximateNumberOfMessagesDelayed'],
      }),
      this.deadline(),
    );
    const attributes = answer.Attributes ?? {};
    return (
      Number(attributes.ApproximateNumberOfMessages ?? 0) +
      Number(attributes.ApproximateNumberOfMessagesNotVisible ?? 0) +
      Number(attributes.ApproximateNumberOfMessagesDelayed ?? 0)
    );
  }

  private track(messageId: string, item: Tracked): void {
    const existing = this.tracked.get(messageId);
    if (existing !== undefined) {
      existing.body = item.body ?? existing.body;
      return;
    }
    if (this.tracked.size >= trackedMessagesMax) return;
    this.tracked.set(messageId, item);
  }

  private forget(receipt: string): void {
    const messageId = this.receipts.get(receipt);
    this.receipts.delete(receipt);
    if (messageId !== undefined) this.tracked.delete(messageId);
  }

  private deadline(): { abortSignal: AbortSignal } {
    return { abortSignal: AbortSignal.timeout(this.requestTimeoutMs) };
  }
}

export function createSqsSpillQueue(options: SqsSpillQueueOptions): SqsSpillQueue {
  return new SqsSpillQueue(options);
}

/**
 * Creates the queue and its dead-letter queue when missing (CreateQueue is idempotent) and
 * returns their URLs. For tests and local runs; production creates them with its infrastructure.
 */
export async function ensureSqsSpillQueues(client: SQSClientConfig, queueName: string): Promise<{ queueUrl: string; deadLetterQueueUrl: string }> {
  const sqs = new SQSClient(client);
  try {
    const deadLetters = await sqs.send(new CreateQueueCommand({ QueueName: `${queueName}-dead-letters`, Attributes: { MessageRetentionPeriod: '1209600' } }));
    const queue = await sqs.send(new CreateQueueCommand({ QueueName: queueName, Attributes: { MessageRetentionPeriod: '1209600' } }));
    if (queue.QueueUrl === undefined || deadLetters.QueueUrl === undefined) throw new Error('CreateQueue returned no URL');
    return { queueUrl: queue.QueueUrl, deadLetterQueueUrl: deadLetters.QueueUrl };
  } finally {
    sqs.destroy();
  }
}
