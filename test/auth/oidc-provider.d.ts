// oidc-provider ships no type declarations: the little the interop test uses.
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http';
  export default class Provider {
    constructor(issuer: string, configuration: Record<string, unknown>);
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
    on(event: string, listener: (...args: unknown[]) => void): this;
    proxy: boolean;
    registerGrantType(name: string, handler: (ctx: any, next: () => Promise<void>) => Promise<void>, parameters?: Set<string> | string[], duplicates?: Set<string> | string[]): void;
    readonly ClientCredentials: any;
    readonly Client: any;
  }
}
declare module 'oidc-provider/lib/helpers/validate_dpop.js' {
  const validateDpop: (ctx: any, ...rest: any[]) => Promise<any>;
  export default validateDpop;
}
