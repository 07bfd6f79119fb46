// Secrets the operator did not set are generated once and kept in the data dir (mode 0600), so
// a restart keeps tokens valid and email hashes stable. They are never logged; the generated
// admin password is printed once, on the start that created it.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile, rename } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from './config.ts';

export interface Secrets {
  /** HS256 key for access tokens. */
  readonly jwtSecret: string;
  /** HMAC key for the keyed hashes of emails (lookup without keeping the address). */
  readonly emailHashKey: string;
  /** HMAC key for the keyed hashes of client IPs. */
  readonly ipHashKey: string;
  /** HMAC key that signs self-hosted CAPTCHA challenges; every node must share it. */
  readonly captchaHmacKey: string;
  readonly adminEmail: string;
  readonly adminPassword: string;
  /** Password for the embedded Postgres superuser. */
  readonly embeddedDbPassword: string;
}

interface StoredSecrets {
  jwtSecret: string;
  emailHashKey: string;
  ipHashKey: string;
  captchaHmacKey: string;
  adminPassword: string;
  embeddedDbPassword: string;
}

function generateSecrets(): StoredSecrets {
  return {
    jwtSecret: randomSecret(48),
    emailHashKey: randomSecret(32),
    ipHashKey: randomSecret(32),
    captchaHmacKey: randomSecret(32),
    adminPassword: randomSecret(18),
    embeddedDbPassword: randomSecret(24),
  };
}

export interface LoadedSecrets {
  readonly secrets: Secrets;
  /** Set only on the start that generated the admin password: the caller prints it once. */
  readonly generatedAdminPassword: string | undefined;
}

const secretsFileName = 'secrets.json';
const defaultAdminEmail = 'admin@livevote.local';

function randomSecret(bytes: number): string {
  return randomBytes(bytes).toString('base64url');
}

export async function loadOrCreateSecrets(config: Config): Promise<LoadedSecrets> {
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(config.dataDir, secretsFileName);
  let stored: StoredSecrets | undefined;
  try {
    stored = JSON.parse(await readFile(file, 'utf8')) as StoredSecrets;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  let generatedAdminPassword: string | undefined;
  const fresh = generateSecrets();
  // A data dir from an older version lacks secrets added since: fill in only what is missing.
  const complete: StoredSecrets = { ...fresh, ...(stored ?? {}) };
  if (!stored || Object.keys(fresh).some((key) => !(key in stored!))) {
    // Write-then-rename: a crash mid-write must not leave a half file that locks users out.
    const temporary = `${file}.${process.pid}.tmp`;
    await writeFile(temporary, JSON.stringify(complete, null, 2), { mode: 0o600 });
    await rename(temporary, file);
    if (!stored && !config.adminPassword) generatedAdminPassword = complete.adminPassword;
  }
  stored = complete;
  return {
    secrets: {
      jwtSecret: config.jwtSecret ?? stored.jwtSecret,
      emailHashKey: stored.emailHashKey,
      ipHashKey: stored.ipHashKey,
      captchaHmacKey: stored.captchaHmacKey,
      adminEmail: config.adminEmail ?? defaultAdminEmail,
      adminPassword: config.adminPassword ?? stored.adminPassword,
      embeddedDbPassword: stored.embeddedDbPassword,
    },
    generatedAdminPassword,
  };
}
