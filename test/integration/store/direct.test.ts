import { storeSuite } from './suite.ts';

storeSuite('direct');
