/**
 * The Hetzner Cloud objects this operator reads, typed by hand from the public OpenAPI
 * description (only the fields we use are required here; extra fields are accepted so a
 * new API field never breaks parsing). Every response is checked against these schemas at
 * the boundary (`parse` in client.ts): nothing from the wire is cast.
 */
import { type Static, type TSchema, Type } from '@sinclair/typebox';

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);
const Labels = Type.Record(Type.String(), Type.String());

export const ServerStatus = Type.Union([
  Type.Literal('running'),
  Type.Literal('initializing'),
  Type.Literal('starting'),
  Type.Literal('stopping'),
  Type.Literal('off'),
  Type.Literal('deleting'),
  Type.Literal('migrating'),
  Type.Literal('rebuilding'),
  Type.Literal('unknown'),
]);
export type ServerStatus = Static<typeof ServerStatus>;

export const Location = Type.Object({
  id: Type.Integer(),
  name: Type.String(),
  description: Type.String(),
  country: Type.String(),
  city: Type.String(),
  network_zone: Type.String(),
});
export type Location = Static<typeof Location>;

export const ServerType = Type.Object({
  id: Type.Integer(),
  name: Type.String(),
  description: Type.String(),
  cores: Type.Integer(),
  memory: Type.Number(),
  disk: Type.Number(),
  architecture: Type.String(),
  cpu_type: Type.String(),
  deprecated: Nullable(Type.Boolean()),
  locations: Type.Optional(Type.Array(Type.Object({ id: Type.Integer(), name: Type.String() }))),
});
export type ServerType = Static<typeof ServerType>;

export const Image = Type.Object({
  id: Type.Integer(),
  name: Nullable(Type.String()),
  description: Type.String(),
  type: Type.String(),
  status: Type.String(),
  architecture: Type.String(),
  os_flavor: Type.String(),
  os_version: Nullable(Type.String()),
  labels: Labels,
  deprecated: Nullable(Type.String()),
});
export type Image = Static<typeof Image>;

export const Server = Type.Object({
  id: Type.Integer(),
  name: Type.String(),
  status: ServerStatus,
  created: Type.String(),
  public_net: Type.Object({
    ipv4: Nullable(Type.Object({ ip: Type.String(), blocked: Type.Boolean() })),
    ipv6: Nullable(Type.Object({ ip: Type.String(), blocked: Type.Boolean() })),
  }),
  server_type: ServerType,
  location: Location,
  image: Nullable(Image),
  rescue_enabled: Type.Boolean(),
  locked: Type.Boolean(),
  labels: Labels,
  protection: Type.Object({ delete: Type.Boolean(), rebuild: Type.Boolean() }),
});
export type Server = Static<typeof Server>;

export const ActionStatus = Type.Union([
  Type.Literal('running'),
  Type.Literal('success'),
  Type.Literal('error'),
]);

export const Action = Type.Object({
  id: Type.Integer(),
  command: Type.String(),
  status: ActionStatus,
  progress: Type.Integer(),
  started: Type.String(),
  finished: Nullable(Type.String()),
  resources: Type.Array(Type.Object({ id: Type.Integer(), type: Type.String() })),
  error: Nullable(Type.Object({ code: Type.String(), message: Type.String() })),
});
export type Action = Static<typeof Action>;

export const SshKey = Type.Object({
  id: Type.Integer(),
  name: Type.String(),
  fingerprint: Type.String(),
  public_key: Type.String(),
  labels: Labels,
  created: Type.String(),
});
export type SshKey = Static<typeof SshKey>;

export const Pagination = Type.Object({
  page: Type.Integer(),
  per_page: Type.Integer(),
  previous_page: Nullable(Type.Integer()),
  next_page: Nullable(Type.Integer()),
  last_page: Nullable(Type.Integer()),
  total_entries: Nullable(Type.Integer()),
});
export type Pagination = Static<typeof Pagination>;
const Meta = Type.Object({ pagination: Pagination });

export const ErrorBody = Type.Object({
  error: Type.Object({
    code: Type.String(),
    message: Type.String(),
    details: Type.Optional(Nullable(Type.Unknown())),
  }),
});

// Response envelopes, one per endpoint shape.
export const ServerResponse = Type.Object({ server: Server });
export const CreateServerResponse = Type.Object({
  server: Server,
  action: Action,
  next_actions: Type.Array(Action),
  root_password: Nullable(Type.String()),
});
export type CreateServerResponse = Static<typeof CreateServerResponse>;
export const ServerListResponse = Type.Object({ servers: Type.Array(Server), meta: Meta });
export const ActionResponse = Type.Object({ action: Action });
export const OptionalActionResponse = Type.Object({ action: Type.Optional(Action) });
export const EnableRescueResponse = Type.Object({ action: Action, root_password: Type.String() });
export const ActionListResponse = Type.Object({ actions: Type.Array(Action) });
export const ServerTypeListResponse = Type.Object({ server_types: Type.Array(ServerType), meta: Meta });
export const LocationListResponse = Type.Object({ locations: Type.Array(Location), meta: Meta });
export const ImageListResponse = Type.Object({ images: Type.Array(Image), meta: Meta });
export const SshKeyResponse = Type.Object({ ssh_key: SshKey });
export const SshKeyListResponse = Type.Object({ ssh_keys: Type.Array(SshKey), meta: Meta });

/** What POST /servers takes (the subset we send). */
export interface CreateServerRequest {
  name: string;
  server_type: string;
  image: string;
  location?: string;
  labels?: Record<string, string>;
  start_after_create?: boolean;
  /** SSH key names or ids. With any, Hetzner sends no root password. */
  ssh_keys?: string[];
  user_data?: string;
  public_net?: { enable_ipv4?: boolean; enable_ipv6?: boolean };
}

export interface Page<T> {
  items: T[];
  pagination: Pagination;
}

export interface ListOptions {
  labelSelector?: string;
  name?: string;
  /** Only servers in one of these states. */
  status?: ServerStatus[];
  page?: number;
  perPage?: number;
  sort?: string;
}
