// Unit tests of the front-end logic (formatting, countdown, the state reducer), run by
// `npm test` with ts-jest: no browser and no JupyterLab needed.
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  transform: {
    '^.+\\.tsx?$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  }
};
