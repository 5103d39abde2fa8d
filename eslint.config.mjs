// The linter (npm run lint; scripts/test.sh runs it after the type check): typescript-eslint
// with type information, for the bugs tsc lets through: promises nobody awaits or handles, async
// functions passed where a callback's result is ignored, unused code, `any` written in the
// sources, values stringified as [object Object]. No formatting rules: the style is the code's own.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', '.dist.*/', 'node_modules/', '**/*.js', '**/*.mjs'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // node:test's describe() and it() return promises that the runner itself awaits.
      '@typescript-eslint/no-floating-promises': ['error', {
        allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite', 'before', 'after', 'beforeEach', 'afterEach'] }],
      }],
      // A leading underscore marks a parameter that an interface makes a function take.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true }],
      // A `return promise` inside try escapes its catch and finally: await it there.
      '@typescript-eslint/return-await': ['error', 'in-try-catch'],
      // Numbers, booleans, arrays (joined) and the like read fine in messages; objects do not.
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true, allowNullish: true, allowArray: true, allowRegExp: true }],
      // The vhost-user and virtio codecs compare numbers read off the wire with enum members: that is the point of the enums.
      '@typescript-eslint/no-unsafe-enum-comparison': 'off',
      // koffi declares every foreign function as returning `any` (a 64-bit result can be a number
      // or a BigInt), so every syscall result is one; typing each binding in src/sys/libc.ts is a
      // change of its own. `any` written in the sources is still refused (no-explicit-any).
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      eqeqeq: ['error', 'always', { null: 'ignore' }],
    },
  },
  {
    // Tests and benchmarks read `pier show --json` and the like: JSON, untyped by nature.
    files: ['**/*.test.ts', 'test/**/*.ts', 'bench/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);
