/** The package's root folder (where models/ and test/ live), from the compiled file's location. */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
