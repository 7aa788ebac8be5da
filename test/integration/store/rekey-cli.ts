// Runs `cannes-operator rekey` as its own process, as an operator user would (the real main dispatches the same way).
import { rekeyCommand } from '../../../operator/cli/rekey.ts';

process.exitCode = await rekeyCommand(process.argv.slice(2), process.env);
