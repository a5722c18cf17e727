// ESLint 9 flat config with typescript-eslint's type-aware rules (STYLE.md habit 15: a linter with zero
// warnings; `npm run lint`, run by `npm test`). Type information comes from the two tsconfigs that compile
// the code: tsconfig.json (src/) and test/tsconfig.json (test/, bench/, scripts/).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.venv/**', 'coverage/**', 'bench/results/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        project: ['./tsconfig.json', './test/tsconfig.json'],
        tsconfigRootDir: import.meta.dirname,
      },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // Promises: every one is awaited, returned or explicitly voided — a dropped rejection is a lost error.
      // node:test's describe/it/test return promises the runner itself tracks: awaiting them is not needed.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite', 'before', 'after', 'beforeEach', 'afterEach'] }] },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      // Variants are discriminated unions; a switch over one must name every member (STYLE.md habit 11).
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Off on purpose: sinks and writers implement async interfaces; `async` keeps a synchronous throw a
      // rejection, which is what their callers handle. A method without `await` is not a bug here.
      '@typescript-eslint/require-await': 'off',
      // Off on purpose: names from bundles and hubs are checked for control characters, and tests look for
      // terminal escapes; a control character in those patterns is the point.
      'no-control-regex': 'off',
    },
  },
  {
    // Tests assert on parsed CLI JSON and Python output (`any` by nature); the assertions are the check.
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
    },
  },
  {
    // Plain JavaScript (the launcher, this file): no type information, Node globals.
    files: ['**/*.js'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { ...tseslint.configs.disableTypeChecked.languageOptions, globals: { process: 'readonly' } },
  },
);
