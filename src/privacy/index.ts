// Privacy: the data inventory of everything Postern persists, and the checks that hold the code to it.
export {
  TABLE_INVENTORY,
  EVENT_INVENTORY,
  FILE_INVENTORY,
  describeRetention,
  declaredColumns,
  listLiveColumns,
  findUndeclaredColumns,
  findUndeclaredEventFields,
} from './inventory.ts';
export type {
  Audience,
  EventDeclaration,
  FileDeclaration,
  FieldDeclaration,
  Retention,
  TableDeclaration,
} from './inventory.ts';
