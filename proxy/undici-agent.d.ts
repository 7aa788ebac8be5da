// undici's Agent on its own (see server.ts): the package has no `exports` map, so the path
// resolves, but it ships no typings of its own for it. It is the same class as undici's
// exported `Agent`.
declare module 'undici/lib/dispatcher/agent.js' {
  import { Agent } from 'undici';
  export = Agent;
}
