import { en, type Strings } from './en';

/** The strings of the console's language (English; a second language adds a file and a line here). */
export const t: Strings = en;
