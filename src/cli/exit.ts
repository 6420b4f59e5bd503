/** Thrown by commands that pass a guest command's exit status through (vm run/ssh -- CMD). */
export class ExitWith extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}
