// `postern network publish`: the signed remote server list, written as psiphon-automation names it
// (server_list plain, server_list_compressed zlib) to a folder or to S3-compatible object storage.
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { S3Client, PutObjectCommand } from '@aws-sdk/client-s3';
import { PosternError, describeError } from '../common/errors.ts';
import type { Clock } from '../common/clock.ts';
import { writeFileAtomic } from '../common/files.ts';
import { writeAuthenticatedDataPackage } from '../protocol/authenticated-package.ts';
import type { Network } from './network.ts';
import type { PublicationRecord } from '../store/index.ts';

export const SERVER_LIST_FILE = 'server_list';
export const SERVER_LIST_COMPRESSED_FILE = 'server_list_compressed';

export interface S3Options {
  /** e.g. http://127.0.0.1:9000 for a self-hosted S3-compatible store; default: AWS_ENDPOINT_URL or AWS */
  endpoint?: string;
  region?: string;
}

export interface PublishResult {
  publication: PublicationRecord;
  serverCount: number;
  /** Where each file went: paths or s3:// URLs */
  written: string[];
}

export function parseS3Url(target: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(target);
  if (!m) {
    throw new PosternError(
      'BAD_ARGUMENT',
      `"${target}" is not an S3 target; write s3://BUCKET or s3://BUCKET/PREFIX (bucket: 3-63 lower-case letters, digits, '.', '-')`,
    );
  }
  const prefix = (m[2] ?? '').replace(/^\/+|\/+$/g, '');
  return { bucket: m[1] as string, prefix };
}

export async function publishServerList(
  net: Network,
  target: string,
  clock: Clock,
  s3: S3Options = {},
): Promise<PublishResult> {
  const servers = (await net.store.listServers()).filter((s) => s.published);
  const data = servers.map((s) => s.encodedEntry).join('\n');
  const keys = net.keys().remoteServerListSigning;
  const plain = writeAuthenticatedDataPackage(data, keys.publicKey, keys.privateKey, { compress: false });
  const compressed = writeAuthenticatedDataPackage(data, keys.publicKey, keys.privateKey, { compress: true });
  const files: [string, Buffer][] = [
    [SERVER_LIST_FILE, plain],
    [SERVER_LIST_COMPRESSED_FILE, compressed],
  ];

  const written: string[] = [];
  let where: string;
  if (target.startsWith('s3://')) {
    const { bucket, prefix } = parseS3Url(target);
    where = `s3://${bucket}${prefix ? '/' + prefix : ''}`;
    const endpoint = s3.endpoint ?? process.env['AWS_ENDPOINT_URL_S3'] ?? process.env['AWS_ENDPOINT_URL'];
    const client = new S3Client({
      region: s3.region ?? process.env['AWS_REGION'] ?? 'us-east-1',
      forcePathStyle: true,
      ...(endpoint ? { endpoint } : {}),
    });
    try {
      for (const [name, body] of files) {
        const key = prefix ? `${prefix}/${name}` : name;
        try {
          await client.send(
            new PutObjectCommand({
              Bucket: bucket,
              Key: key,
              Body: body,
              ContentType: 'application/octet-stream',
            }),
          );
        } catch (e) {
          throw new PosternError(
            'UPLOAD',
            `upload of ${key} to bucket ${bucket} failed: ${describeError(e)}`,
            {
              cause: e,
            },
          );
        }
        written.push(`s3://${bucket}/${key}`);
      }
    } finally {
      client.destroy();
    }
  } else {
    const dir = resolve(target);
    where = dir;
    for (const [name, body] of files) {
      writeFileAtomic(join(dir, name), body);
      written.push(join(dir, name));
    }
  }
  const publication = await net.store.recordPublication({
    publishedAt: clock.now(),
    serverCount: servers.length,
    target: where,
    sha256: createHash('sha256').update(compressed).digest('hex'),
  });
  return { publication, serverCount: servers.length, written };
}
