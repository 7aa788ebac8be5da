/**
 * The API objects as the operator holds them once parsed (parse.ts): the Kubernetes envelope,
 * the spec with the API server's defaults applied, the status. Controllers, adapters and the
 * parser all use these; they live with the schema so no lower folder reaches up for them.
 */
import type { ObjectMeta } from '../kube/object.ts';
import type { ModelKeySpec, ModelKeyStatus, VpsStatus } from './schema.ts';

export interface VpsObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: ObjectMeta;
  readonly spec: ResolvedVpsSpec;
  readonly status: VpsStatus;
}

export interface ModelKeyObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: ObjectMeta;
  readonly spec: ModelKeySpec;
  readonly status: ModelKeyStatus;
}

/** A Vps spec with the API server's defaults applied (the operator never re-defaults). */
export interface ResolvedVpsSpec {
  readonly serverType: string;
  readonly location: string;
  readonly image: string;
  readonly cloudTokenSecretRef: { readonly name: string; readonly key: string };
  readonly gateway: { readonly image: string; readonly port: number };
  readonly sshKeyRotation: { readonly interval: string };
  /** The owner's public keys for `ssh -N -L` to the gateway (validated again by the deploy). */
  readonly access: { readonly sshAuthorizedKeys: readonly string[] };
  /** Absent: the server is not on a tailnet (the tailnet step does nothing). */
  readonly tailnet?: ResolvedTailnetSpec;
  readonly purgeCloudTokenAfterSetup: boolean;
  readonly deletionPolicy: 'Delete' | 'Retain';
}

export interface ResolvedTailnetSpec {
  readonly authKeySecretRef: { readonly name: string; readonly key: string };
  readonly hostname: string;
  readonly tags: readonly string[];
  readonly loginServer: string;
  readonly purgeAuthKeyAfterJoin: boolean;
  /** Tailnet login names or tags allowed to hand Direct keys to the server's intake. */
  readonly owners: readonly string[];
}
