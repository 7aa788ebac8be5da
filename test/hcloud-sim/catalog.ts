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
}

const EU = ['fsn1', 'nbg1', 'hel1'];
const ALL = LOCATIONS.map((l) => l.name);

const TYPES: TypeDef[] = [
  {
    id: 104,
    name: 'cx22',
    cores: 2,
    memory: 4,
    disk: 40,
    architecture: 'x86',
    cpu_type: 'shared',
    category: 'cost_optimized',
    monthly: 4.59,
    where: EU,
  },
  {
    id: 105,
    name: 'cx32',
    cores: 4,
    memory: 8,
    disk: 80,
    architecture: 'x86',
    cpu_type: 'shared',
    category: 'cost_optimized',
    monthly: 7.59,
    where: EU,
  },
  {
    id: 106,
    name: 'cx42',
    cores: 8,
    memory: 16,
    disk: 160,
    architecture: 'x86',
    cpu_type: 'shared',
    category: 'cost_optimized',
    monthly: 18.59,
    where: EU,
  },
  {
    id: 22,
    name: 'cpx11',
    cores: 2,
    memory: 2,
    disk: 40,
    architecture: 'x86',
    cpu_type: 'shared',
    category: 'regular_purpose',
    monthly: 4.99,
    where: ALL,
  },
  {
    id: 23,
    name: 'cpx21',
    cores: 3,
    memory: 4,
    disk: 80,
    architecture: 'x86',
    cpu_type: 'shared',
    category: 'regular_purpose',
    monthly: 8.99,
    where: ALL,
  },
  {
    id: 24,
    name: 'cpx31',
    cores: 4,
    memory: 8,
    disk: 160,
    architecture: 'x86',
    cpu_type: 'shared',
    category: 'regular_purpose',
    monthly: 16.49,
    where: ALL,
  },
  {
    id: 45,
    name: 'cax11',
    cores: 2,
    memory: 4,
    disk: 40,
    architecture: 'arm',
    cpu_type: 'shared',
    category: 'cost_optimized',
    monthly: 3.79,
    where: EU,
  },
  {
    id: 46,
    name: 'cax21',
    cores: 4,
    memory: 8,
    disk: 80,
    architecture: 'arm',
    cpu_type: 'shared',
    category: 'cost_optimized',
    monthly: 6.49,
    where: EU,
  },
  {
    id: 96,
    name: 'ccx13',
    cores: 2,
    memory: 8,
    disk: 80,
    architecture: 'x86',
    cpu_type: 'dedicated',
    category: 'general_purpose',
    monthly: 12.49,
    where: ALL,
  },
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
  deprecated: false,
  deprecation: null,
  locations: t.where.map((name) => ({
    id: LOCATIONS.find((l) => l.name === name)!.id,
    name,
    deprecation: null,
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

export const DATACENTERS = LOCATIONS.map((l, i) => {
  const ids = SERVER_TYPES.filter((t) => t.locations.some((x) => x.name === l.name)).map((t) => t.id);
  const dc = ['fsn1-dc14', 'nbg1-dc3', 'hel1-dc2', 'ash-dc1', 'hil-dc1', 'sin-dc1'][i]!;
  return {
    id: [4, 2, 3, 5, 6, 7][i]!,
    name: dc,
    description: `${l.city} ${dc.split('-')[1]!.toUpperCase().replace('DC', 'DC ')}`,
    location: l,
    server_types: { supported: ids, available: ids, available_for_migration: ids },
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
