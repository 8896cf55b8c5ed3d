// A real S3-compatible server on loopback (s3rver), for tests of publishing and fetching lists.
import S3rver from 's3rver';
import { tempDir } from './tmp.ts';

export const S3_ACCESS_KEY = 'S3RVER';
export const S3_SECRET_KEY = 'S3RVER';

export async function startObjectStore(
  t: { after(fn: () => void | Promise<void>): void },
  buckets: string[],
): Promise<{ endpoint: string }> {
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory: tempDir(t, 'postern-s3-'),
    vhostBuckets: false,
    configureBuckets: buckets.map((name) => ({ name })),
  });
  const { port } = await server.run();
  t.after(() => server.close());
  return { endpoint: `http://127.0.0.1:${port}` };
}
