/**
 * The simulator's fixed catalogue: locations, datacenters, server types and images, in the
 * exact JSON shapes of the public API (components/schemas in the OpenAPI description).
 * Ids and names follow the real ones where they are public knowledge; prices are plausible.
 */
const T0 = '2016-01-30T23:50:00Z';

export interface LocationJson {
  id: number;
  name: string;
  description: string;
  country: string;
  city: string;
  latitude: number;
  longitude: number;
  network_zone: string;
}

export const LOCATIONS: LocationJson[] = [
  loc(1, 'fsn1', 'Falkenstein DC Park 1', 'DE', 'Falkenstein', 50.47612, 12.370071, 'eu-central'),
  loc(2, 'nbg1', 'Nuremberg DC Park 1', 'DE', 'Nuremberg', 49.452102, 11.076665, 'eu-central'),
  loc(3, 'hel1', 'Helsinki DC Park 1', 'FI', 'Helsinki', 60.169855, 24.938379, 'eu-central'),
  loc(4, 'ash', 'Ashburn, VA', 'US', 'Ashburn, VA', 39.045821, -77.487073, 'us-east'),
  loc(5, 'hil', 'Hillsboro, OR', 'US', 'Hillsboro, OR', 45.54222, -122.951924, 'us-west'),
  loc(6, 'sin', 'Singapore', 'SG', 'Singapore', 1.283333, 103.833333, 'ap-southeast'),
];

function loc(
  id: number,
  name: string,
  description: string,
  country: string,
  city: string,
  latitude: number,
  longitude: number,
  network_zone: string,
): LocationJson {
  return { id, name, description, country, city, latitude, longitude, network_zone };
}

interface TypeDef {
  id: number;
  name: string;
  cores: number;
  memory: number;
  disk: number;
  architecture: 'x86' | 'arm';
  cpu_type: 'shared' | 'dedicated';
  category: string;
  monthly: number;
  /** Location names where it is sold. */
  where: string[];
  /** Deprecated in every location it is sold in (Hetzner deprecates per location). */
  deprecation?: { announced: string; unavailable_after: string };
}

const EU = ['fsn1', 'nbg1', 'hel1'];
const ALL = LOCATIONS.map((l) => l.name);

/**
 * Hetzner's changelog, 2025-10-16 ("server types deprecated"): the Intel CX Gen2 line (cx22 …
 * cx52) and the AMD CPX Gen1 line (cpx11 … cpx51) are deprecated in every location and can no
 * longer be ordered from the end of 2025 (the API's warning: "will no longer be available for
 * order as of 2025-12-31"). Their successors are the cost-optimised cx23, cx33, cx43, cx53 and
 * the regular-performance cpx12 … cpx62; the Arm line cax11 … cax41 (architecture `arm`) and
 * the dedicated ccx13 … ccx63 go on. Sources: docs.hetzner.cloud/changelog#2025-10-16-server-types-deprecated
 * (quoted by hetznercloud/cli#1211, ansible-collections/hetzner.hcloud#718,
 * apricote/hcloud-upload-image#129) and Hetzner's product pages as quoted by public projects
 * (sizes). Ids of the new types and all prices are the simulator's own (plausible, not
 * Hetzner's).
 */
const GEN2_GONE = { announced: '2025-10-16T00:00:00Z', unavailable_after: '2025-12-31T00:00:00Z' };

const t = (
  id: number,
  name: string,
  cores: number,
  memory: number,
  disk: number,
  architecture: 'x86' | 'arm',
  cpu_type: 'shared' | 'dedicated',
  category: string,
  monthly: number,
  where: string[],
  deprecation?: TypeDef['deprecation'],
): TypeDef => ({
  id,
  name,
  cores,
  memory,
  disk,
  architecture,
  cpu_type,
  category,
  monthly,
  where,
  ...(deprecation ? { deprecation } : {}),
});

const TYPES: TypeDef[] = [
  // Cost-optimised, shared vCPU (x86), EU only.
  t(114, 'cx23', 2, 4, 40, 'x86', 'shared', 'cost_optimized', 3.49, EU),
  t(115, 'cx33', 4, 8, 80, 'x86', 'shared', 'cost_optimized', 5.49, EU),
  t(116, 'cx43', 8, 16, 160, 'x86', 'shared', 'cost_optimized', 9.49, EU),
  t(117, 'cx53', 16, 32, 320, 'x86', 'shared', 'cost_optimized', 17.49, EU),
  // Cost-optimised Arm (Ampere), EU only: the best price per performance; needs arm64 builds.
  t(45, 'cax11', 2, 4, 40, 'arm', 'shared', 'cost_optimized', 3.79, EU),
  t(93, 'cax21', 4, 8, 80, 'arm', 'shared', 'cost_optimized', 6.49, EU),
  t(94, 'cax31', 8, 16, 160, 'arm', 'shared', 'cost_optimized', 12.49, EU),
  t(95, 'cax41', 16, 32, 320, 'arm', 'shared', 'cost_optimized', 24.49, EU),
  // Regular performance, shared vCPU (AMD), every location.
  t(108, 'cpx12', 1, 2, 40, 'x86', 'shared', 'regular_purpose', 4.49, ALL),
  t(109, 'cpx22', 2, 4, 80, 'x86', 'shared', 'regular_purpose', 7.99, ALL),
  t(110, 'cpx32', 4, 8, 160, 'x86', 'shared', 'regular_purpose', 13.99, ALL),
  t(111, 'cpx42', 8, 16, 320, 'x86', 'shared', 'regular_purpose', 25.49, ALL),
  t(112, 'cpx52', 12, 24, 480, 'x86', 'shared', 'regular_purpose', 36.49, ALL),
  t(113, 'cpx62', 16, 32, 640, 'x86', 'shared', 'regular_purpose', 49.49, ALL),
  // General purpose, dedicated vCPU (AMD), every location.
  t(96, 'ccx13', 2, 8, 80, 'x86', 'dedicated', 'general_purpose', 12.49, ALL),
  t(97, 'ccx23', 4, 16, 160, 'x86', 'dedicated', 'general_purpose', 24.49, ALL),
  t(98, 'ccx33', 8, 32, 240, 'x86', 'dedicated', 'general_purpose', 48.49, ALL),
  t(99, 'ccx43', 16, 64, 360, 'x86', 'dedicated', 'general_purpose', 96.49, ALL),
  t(100, 'ccx53', 32, 128, 600, 'x86', 'dedicated', 'general_purpose', 192.49, ALL),
  t(101, 'ccx63', 48, 192, 960, 'x86', 'dedicated', 'general_purpose', 288.49, ALL),
  // Deprecated (2025-10-16) and no longer orderable: existing servers keep them.
  t(104, 'cx22', 2, 4, 40, 'x86', 'shared', 'cost_optimized', 4.59, EU, GEN2_GONE),
  t(105, 'cx32', 4, 8, 80, 'x86', 'shared', 'cost_optimized', 7.59, EU, GEN2_GONE),
  t(106, 'cx42', 8, 16, 160, 'x86', 'shared', 'cost_optimized', 18.59, EU, GEN2_GONE),
  t(107, 'cx52', 16, 32, 320, 'x86', 'shared', 'cost_optimized', 36.59, EU, GEN2_GONE),
  t(22, 'cpx11', 2, 2, 40, 'x86', 'shared', 'regular_purpose', 4.99, ALL, GEN2_GONE),
  t(23, 'cpx21', 3, 4, 80, 'x86', 'shared', 'regular_purpose', 8.99, ALL, GEN2_GONE),
  t(24, 'cpx31', 4, 8, 160, 'x86', 'shared', 'regular_purpose', 16.49, ALL, GEN2_GONE),
  t(25, 'cpx41', 8, 16, 240, 'x86', 'shared', 'regular_purpose', 30.49, ALL, GEN2_GONE),
  t(26, 'cpx51', 16, 32, 360, 'x86', 'shared', 'regular_purpose', 65.49, ALL, GEN2_GONE),
];

function price(n: number) {
  const gross = (n * 1.19).toFixed(10);
  return { net: n.toFixed(10), gross };
}

export const SERVER_TYPES = TYPES.map((t) => ({
  id: t.id,
  name: t.name,
  description: t.name.toUpperCase(),
  category: t.category,
  cores: t.cores,
  memory: t.memory,
  disk: t.disk,
  architecture: t.architecture,
  cpu_type: t.cpu_type,
  storage_type: 'local' as const,
  // Both top-level fields are deprecated in favour of locations[].deprecation; Hetzner still
  // fills them for a type deprecated everywhere.
  deprecated: t.deprecation !== undefined,
  deprecation: t.deprecation ?? null,
  locations: t.where.map((name) => ({
    id: LOCATIONS.find((l) => l.name === name)!.id,
    name,
    deprecation: t.deprecation ?? null,
  })),
  prices: t.where.map((location) => ({
    location,
    price_hourly: price(Math.round((t.monthly / 730) * 10000) / 10000),
    price_monthly: price(t.monthly),
    included_traffic: 21990232555520,
    price_per_tb_traffic: price(1),
  })),
}));
export type ServerTypeJson = (typeof SERVER_TYPES)[number];

/**
 * Whether a server of this type can be created in this location now: sold there, and not
 * past its `unavailable_after` there (openapi: such a type "can not be used to create new
 * resources" and is no longer listed).
 */
export function orderable(type: ServerTypeJson, location: string, now = Date.now()): boolean {
  const l = type.locations.find((x) => x.name === location);
  if (!l) return false;
  return l.deprecation === null || Date.parse(l.deprecation.unavailable_after) > now;
}

export const DATACENTERS = LOCATIONS.map((l, i) => {
  const ids = SERVER_TYPES.filter((t) => t.locations.some((x) => x.name === l.name)).map((t) => t.id);
  const dc = ['fsn1-dc14', 'nbg1-dc3', 'hel1-dc2', 'ash-dc1', 'hil-dc1', 'sin-dc1'][i]!;
  return {
    id: [4, 2, 3, 5, 6, 7][i]!,
    name: dc,
    description: `${l.city} ${dc.split('-')[1]!.toUpperCase().replace('DC', 'DC ')}`,
    location: l,
    server_types: {
      supported: ids,
      available: SERVER_TYPES.filter((t) => orderable(t, l.name)).map((t) => t.id),
      available_for_migration: ids,
    },
  };
});
export type DatacenterJson = (typeof DATACENTERS)[number];

interface ImageDef {
  id: number;
  name: string;
  description: string;
  type: 'system' | 'app';
  os_flavor: string;
  os_version: string | null;
  architecture: 'x86' | 'arm';
}

const IMAGE_DEFS: ImageDef[] = [
  {
    id: 161547269,
    name: 'ubuntu-24.04',
    description: 'Ubuntu 24.04',
    type: 'system',
    os_flavor: 'ubuntu',
    os_version: '24.04',
    architecture: 'x86',
  },
  {
    id: 103908130,
    name: 'ubuntu-24.04',
    description: 'Ubuntu 24.04',
    type: 'system',
    os_flavor: 'ubuntu',
    os_version: '24.04',
    architecture: 'arm',
  },
  {
    id: 67794396,
    name: 'ubuntu-22.04',
    description: 'Ubuntu 22.04',
    type: 'system',
    os_flavor: 'ubuntu',
    os_version: '22.04',
    architecture: 'x86',
  },
  {
    id: 114690387,
    name: 'debian-12',
    description: 'Debian 12',
    type: 'system',
    os_flavor: 'debian',
    os_version: '12',
    architecture: 'x86',
  },
  {
    id: 114690389,
    name: 'debian-12',
    description: 'Debian 12',
    type: 'system',
    os_flavor: 'debian',
    os_version: '12',
    architecture: 'arm',
  },
  {
    id: 40093140,
    name: 'docker-ce',
    description: 'Docker CE',
    type: 'app',
    os_flavor: 'ubuntu',
    os_version: null,
    architecture: 'x86',
  },
  {
    id: 103908071,
    name: 'docker-ce',
    description: 'Docker CE',
    type: 'app',
    os_flavor: 'ubuntu',
    os_version: null,
    architecture: 'arm',
  },
];

export const IMAGES = IMAGE_DEFS.map((d) => ({
  id: d.id,
  name: d.name,
  description: d.description,
  type: d.type,
  status: 'available' as const,
  image_size: null,
  disk_size: 5,
  created: T0,
  created_from: null,
  bound_to: null,
  os_flavor: d.os_flavor,
  os_version: d.os_version,
  architecture: d.architecture,
  rapid_deploy: true,
  protection: { delete: false },
  deprecated: null,
  deleted: null,
  labels: {} as Record<string, string>,
}));
export type ImageJson = (typeof IMAGES)[number];
