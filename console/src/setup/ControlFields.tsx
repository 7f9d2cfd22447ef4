import { StationControlValues, type StationControl } from '../api/generated';
import { t } from '../i18n';
import { Text } from '../ui';
import { controlFields } from './control';

/** A station's control, and what that control needs to reach its device, as typed. */
export function ControlFields(props: {
  control: StationControl;
  setControl: (c: StationControl) => void;
  values: Record<string, string>;
  setValues: (f: (old: Record<string, string>) => Record<string, string>) => void;
}) {
  const { control, values } = props;
  return (
    <>
      <label>
        {t.setup.control}
        <select value={control} onChange={(e) => props.setControl(e.target.value as StationControl)}>
          {StationControlValues.map((c) => <option key={c} value={c}>{c.toLowerCase()}</option>)}
        </select>
      </label>
      {controlFields(control).map((f) => (
        <Text
          key={`${control}-${f.key}`}
          label={f.label}
          value={values[f.key] ?? ''}
          set={(v) => props.setValues((old) => ({ ...old, [f.key]: v }))}
          type={f.numeric ? 'number' : 'text'}
          required={f.required}
        />
      ))}
    </>
  );
}
